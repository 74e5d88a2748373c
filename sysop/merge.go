package sysop

import (
	"encoding/json"
	"fmt"
)

// MergeStream is the system event stream of merge reports: subscribe to
// structure MergeStream of service Service (op.EventSource) on a member
// or a client to receive a MergeReport (JSON, see DecodeMergeReport) each
// time a member of the losing side of a split hands what it held over to
// the winning side.
const MergeStream = "merge"

// TableStream is the system event stream of partition table changes: a
// member sends the version of each table it adopts (8 bytes, big endian)
// to the subscribers of structure TableStream of service Service. Clients
// subscribe to it on every member and read the new table at once, instead
// of at their next refresh: a call waiting on a member the cluster
// declared gone (cut off, paused) is retried on the partition's new owner
// as soon as the rest of the cluster has one.
const TableStream = "table"

// SystemStream reports whether (service, name) is a system event stream
// that applications may subscribe to.
func SystemStream(service, name string) bool {
	return service == Service && (name == MergeStream || name == TableStream)
}

// MergeReport says what one member's heal did with the partitions it
// owned on the losing side of a split.
type MergeReport struct {
	// Member is the member that owned the partitions on the losing side.
	Member string `json:"member"`
	// TableVersion is the winning side's table that made it let go.
	TableVersion uint64 `json:"table_version"`
	// Partitions is the number of partitions it owned without handing
	// them over, Entries the entries they held.
	Partitions int `json:"partitions"`
	Entries    int `json:"entries"`
	// Structures has one line per structure that had entries there.
	Structures []MergeCount `json:"structures,omitempty"`
}

// MergeCount is what a merge did with one structure.
type MergeCount struct {
	Service   string `json:"service"`
	Structure string `json:"structure"`
	// Policy is the structure's merge policy (discard, put-if-absent,
	// pass-through, append, revoke).
	Policy string `json:"policy"`
	// Entries is how many entries the losing side held; Stored how many
	// the winning side took; Discarded the rest.
	Entries   int `json:"entries"`
	Stored    int `json:"stored"`
	Discarded int `json:"discarded"`
	// FailedPartitions counts partitions whose merge into the owner
	// failed (their entries are discarded).
	FailedPartitions int `json:"failed_partitions,omitempty"`
}

// maxMergeReport bounds an encoded report a decoder accepts.
const maxMergeReport = 4 << 20

// Encode returns the report as JSON.
func (r *MergeReport) Encode() ([]byte, error) { return json.Marshal(r) }

// DecodeMergeReport decodes an event payload of MergeStream.
func DecodeMergeReport(b []byte) (*MergeReport, error) {
	if len(b) > maxMergeReport {
		return nil, fmt.Errorf("merge report of %d bytes, at most %d", len(b), maxMergeReport)
	}
	var r MergeReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("merge report: %w", err)
	}
	return &r, nil
}
