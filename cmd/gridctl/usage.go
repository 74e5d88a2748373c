package main

import (
	"fmt"
	"io"
)

const globalHelp = `Global flags (before or after the command):
  --addr host:port[,host:port]  data addresses of members to contact; the first
                                that answers is used (default $SHOAL_ADDR,
                                else 127.0.0.1:5701)
  --timeout D                   bound on connecting and on each operation
                                (default $SHOAL_TIMEOUT, else 5s)
  --cluster NAME                cluster name, as given to gridnode (default
                                $SHOAL_CLUSTER, else shoal)
  --json                        print one JSON document on stdout
  --version                     print gridctl's version
  --token-file FILE             client token, for clusters that require one
                                (default: the SHOAL_TOKEN environment variable)
  --tls-ca FILE                 connect over TLS, trusting the members' CA
  --tls-cert FILE --tls-key FILE  client certificate, for members that require one
`

const topHelp = `Usage: gridctl COMMAND [ARGS] [FLAGS]

gridctl is the command-line client of a Shoal cluster.

Commands:
  status [--json]                      members, partition ownership and safety
  map put NAME KEY VALUE [--ttl D]     store VALUE under KEY ("-" reads VALUE from stdin)
  map get NAME KEY                     print the value, exactly (no newline added)
  map delete NAME KEY                  remove KEY (exit 1 if it was absent)
  map size NAME                        print the number of entries
  map keys NAME [--raw]                print every key, one per line, sorted
  map entries NAME                     print every entry, KEY<TAB>VALUE, page by page
  map listen NAME [KEY] [--values]     print the map's changes as they happen
  map getall|deleteall NAME [KEY...]   read or remove many keys (stdin: one per line)
  map putall NAME [KEY VALUE...]       store many entries (stdin: KEY<TAB>VALUE lines)
  queue offer NAME [ITEM]              append ITEM (or one item per line of stdin)
  queue poll NAME [--wait D]           print one item (exit 1 if none within D)
  queue drain NAME [--max N] [--wait D] print up to N items, one per line
  queue len NAME                       print the number of ready items
  idem claim NAME ID [--ttl D]         exit 0 if first, 3 if a duplicate, 1 on error
  rmap put|get|delete NAME KEY [VALUE] replicated map (every member holds a copy)
  rmap list|len NAME                   print its entries / their number
  bench [FLAGS]                        load generator (see gridctl help bench)
  lock run NAME [--lease D] [--wait D] -- CMD [ARGS...]
                                       run CMD while holding lock NAME
  lock status NAME [--json]            holder, fencing token and waiters of a lock
  lock force-unlock NAME               release a lock whoever holds it
  elect NAME -- CMD [ARGS...]          run CMD while leader of election NAME
  member remove NAME [--force]         remove a crashed member from the expected size
  completion bash|zsh|fish             shell completion script
  version                              print gridctl's version
  help [COMMAND]                       show help

` + globalHelp + `
Exit status: 0 success; 1 failure (cluster unreachable, key not found,
value too large, ...); 2 usage error (unknown command, missing argument);
3 duplicate (idem claim only).
`

const statusHelp = `Usage: gridctl status [--json]

Shows the members of the cluster, the partition table version (as
TERM.N: the coordinator term and the table number within it), how many
partitions each member owns and backs up, and whether the cluster is safe.

Safe means every partition has its full replica count: with B the largest
backup count seen in the table (replicas - 1) and N the member count, every
partition has at least min(1+B, N) replicas. With no backups configured
that is: every partition has an owner.

  --json   print one JSON object:
           {"members":[{"name","addr","partitions_owned","partitions_backup"}],
            "table_version","partition_count","safe"}

` + globalHelp

const mapHelp = `Usage: gridctl map SUBCOMMAND NAME [KEY [VALUE]]... [FLAGS]

  put NAME KEY VALUE [--ttl D]  store VALUE under KEY; VALUE "-" reads stdin;
                                --ttl makes the entry expire after D
  get NAME KEY                  print the value as raw bytes; a missing key
                                prints nothing on stdout and exits 1
  delete NAME KEY               remove KEY; exits 1 if it was absent
  size NAME                     print the number of live entries
  keys NAME                     print every live key, one per line, sorted;
                                a key that is not printable (newline, escape
                                sequence, invalid UTF-8) or starts with a quote
                                is printed Go-quoted: "a\nb"
  entries NAME                  print every live entry as KEY<TAB>VALUE (keys
                                and values quoted as keys are), partition by
                                partition, page by page: memory stays bounded
  listen NAME [KEY]             print the map's changes (of KEY only, if given)
                                as "KIND PARTITION:SEQ KEY [VALUE]" until
                                interrupted; "lost P:SEQ" lines report events
                                that were lost (re-read what matters)
  getall NAME [KEY...]          print KEY<TAB>VALUE for each live key (keys
                                from stdin, one per line, when none are given)
  putall NAME [KEY VALUE...]    store the pairs (or KEY<TAB>VALUE lines of
                                stdin), one request per partition
  deleteall NAME [KEY...]       remove the keys (or stdin's), print how many
                                were present

  --msgpack   put: VALUE is JSON, stored msgpack-encoded as Go's
              maps.NewTyped stores values (so maps.NewTyped[User] reads it);
              get: decode a msgpack value and print it as JSON
  --raw       keys, entries, getall, listen: print keys (and values)
              exactly as stored
  --unsorted  keys: print keys page by page as they arrive (partition by
              partition, sorted within one) instead of collecting and
              sorting them all: for maps too large to sort in memory
  --values    listen: print the values too
  --count N   listen: exit after N events
  --json      put {"map","key","stored"}; get {"map","key","found","value"
              or "value_base64"}; delete {"map","key","found"};
              size {"map","size"}; keys {"map","keys"} (with --unsorted
              one {"key"} per line); entries, getall: one {"key","value"}
              per line; listen: one {"kind","partition","seq","key"
              [,"value"][,"repeat"]} or {"kind":"lost","missed"} per line;
              putall {"map","stored"}; deleteall {"map","deleted"}

A VALUE that starts with "-" must follow "--": gridctl map put m k -- -5

` + globalHelp

const benchHelp = `Usage: gridctl bench [FLAGS]

Load generator in the spirit of redis-benchmark: --clients goroutines share
one client connection pool and issue gets and puts on random keys of one map,
then throughput and latency percentiles are printed. Errors are counted, not
fatal; the first one is printed on stderr at the end.

  --clients N      concurrent workers (default 50)
  --requests N     total operations (default 100000)
  --duration D     run for D instead of a number of requests
  --keys N         key space: keys key:0 .. key:N-1 (default 100000)
  --value-size N   bytes per value (default 100)
  --ratio G:P      get:put mix, e.g. 1:0, 0:1, 9:1 (default 1:1)
  --map NAME       map to use (default bench)
  --prefill        put every key once before measuring
  --json           print one JSON object: {"ops","errors","seconds",
                   "ops_per_sec","p50_ms","p90_ms","p99_ms","p999_ms",
                   "gets","puts","clients","value_size"}

Latencies are those of successful operations. On a terminal a progress
line is refreshed on stderr every 500ms. The report is printed in any case;
the exit status is 1 when any operation failed.

` + globalHelp

const lockHelp = `Usage: gridctl lock SUBCOMMAND NAME [FLAGS] [-- CMD [ARGS...]]

  run NAME [--lease D] [--wait D] -- CMD [ARGS...]
        wait for lock NAME (FIFO), run CMD with SHOAL_FENCE=<fencing token>
        in its environment, release the lock when CMD exits. Exits with
        CMD's status (128+N if signal N killed it); exits 1 with a message
        if the lock was not acquired within --wait (default: wait until
        interrupted). --lease makes the lock release itself after D even
        if CMD still runs (then SHOAL_FENCE is what fences CMD off).
        SIGINT/SIGTERM to gridctl are passed on to CMD as SIGTERM.
  status NAME [--json]
        print whether the lock is held, its holder (session/owner), fencing
        token, hold count, lease and waiters; --json prints one object:
        {"name","held","holder":{"session","owner"},"token","holds",
         "lease_end","waiters","queue":[{"session","owner"}]}
  force-unlock NAME
        release the lock whoever holds it and grant it to the next waiter.

The lock is held by gridctl's client session: if gridctl dies, the lock is
released once the session's heartbeats have been missing for its TTL. A
resource guarded by the lock should remember the highest SHOAL_FENCE it
has seen and refuse lower ones.

` + globalHelp

const electHelp = `Usage: gridctl elect NAME [--wait D] [--check D] -- CMD [ARGS...]

Campaign in leader election NAME; once elected, run CMD with
SHOAL_TERM=<term> (the term strictly increases from leader to leader).
If CMD exits, resign and exit with its status. If leadership is lost (the
session expired, an operator forced the lock, or leadership could not be
confirmed for two --check intervals), CMD gets SIGTERM (SIGKILL 10s later)
and gridctl exits 1.

  --wait D    give up (exit 1) if not elected within D (default: wait)
  --check D   how often the leader confirms its leadership (default: the
              session heartbeat, else 1s)

` + globalHelp
const completionHelp = `Usage: gridctl completion bash|zsh|fish

Prints a shell completion script for commands, map subcommands and flags:

  source <(gridctl completion bash)        # in ~/.bashrc
  source <(gridctl completion zsh)         # in ~/.zshrc
  gridctl completion fish | source         # in config.fish
`

// printUsage prints the top-level help.
func printUsage(w io.Writer) { fmt.Fprint(w, topHelp) }

// printHelp prints the help of topic ("" = top level).
func printHelp(w io.Writer, topic string) {
	switch topic {
	case "status":
		fmt.Fprint(w, statusHelp)
	case "map":
		fmt.Fprint(w, mapHelp)
	case "bench":
		fmt.Fprint(w, benchHelp)
	case "lock":
		fmt.Fprint(w, lockHelp)
	case "elect":
		fmt.Fprint(w, electHelp)
	case "queue":
		fmt.Fprint(w, queueHelp)
	case "idem":
		fmt.Fprint(w, idemHelp)
	case "rmap":
		fmt.Fprint(w, rmapHelp)
	case "member":
		fmt.Fprint(w, memberHelp)
	case "completion":
		fmt.Fprint(w, completionHelp)
	default:
		printUsage(w)
	}
}

const memberHelp = `Usage: gridctl member remove NAME [--force]

Removes member NAME, which crashed or disappeared for good, from the
cluster's expected size (the voters its quorum counts). Crashes never lower
the expected size by themselves: from inside a network cut a crash looks
the same, and a side that lowered it would give itself a majority. A
3-member cluster that lost 2 members for good stops serving protected
structures until they return or are removed.

The members refuse while NAME is alive (stop it first; a graceful stop
lowers the expected size by itself) and, unless --force is given, while the
coordinator has no quorum. --force is for members known to be gone: forced
on the cut-off side of a network split it lets that side serve on its own
(split brain). A removed member that comes back under its name counts again.

On clusters with client tokens it needs the admin role on "*".

Flags:
  --force   remove it even though the coordinator has no quorum

` + globalHelp
