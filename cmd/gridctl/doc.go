// Command gridctl is the command-line client of a Shoal cluster, for
// operators and scripts: it shows the cluster's state, reads and writes map
// entries, and generates load.
//
// Usage:
//
//	gridctl COMMAND [ARGS] [FLAGS]
//
// Flags may appear before or after the command and its arguments. Every
// command accepts the global flags:
//
//	--addr host:port[,host:port]  data addresses of members to contact; the
//	                              first that answers is used (default
//	                              $SHOAL_ADDR, else 127.0.0.1:5701)
//	--timeout D                   bound on connecting, and on each operation
//	                              (default $SHOAL_TIMEOUT, else 5s)
//	--cluster NAME                cluster name, as given to gridnode (default
//	                              $SHOAL_CLUSTER, else shoal)
//	--json                        print one JSON document on stdout
//	--token-file FILE             client token, for clusters that require one
//	                              (default: the SHOAL_TOKEN environment variable)
//	--tls-ca FILE                 connect over TLS, trusting the members' CA
//	--tls-cert FILE --tls-key FILE  client certificate, for members that require one
//
// gridctl --version (or gridctl version) prints its version. A port that
// is not a number from 1 to 65535 is a usage error. Connecting fails at
// once, without waiting for --timeout, when every address refuses the
// connection, does not resolve, answers HTTP (gridnode's --http port
// instead of its data port) or belongs to another cluster (the message
// names the member's cluster and the --cluster to give).
//
// Shell completion: source <(gridctl completion bash), or zsh, or
// gridctl completion fish | source.
//
// # status
//
// status lists the members (name, data address, zone and host labels when
// set), the partition table version, and how many partitions each member
// owns and backs up, as read from the partition table the client receives:
//
//	$ gridctl status --addr 10.0.0.1:5701
//	cluster shoal: 3 members, table version 1.7, 271 partitions, 2 replica(s) each, safe: yes
//
//	NAME  ADDR            ZONE  HOST  OWNED  BACKUP
//	n1    10.0.0.1:5701   -     -     91     90
//	...
//
// The cluster is safe when it can lose one more member (up to the backup
// count) without losing data: every member answers and follows the same
// table, every partition has its full replica count, and every backup
// holds every mutation (members report this themselves; see client.Safe).
// When it is not safe, the report says why. status --json prints one
// object:
//
//	{"members":[{"name":"n1","addr":"10.0.0.1:5701","partitions_owned":91,"partitions_backup":90}, ...],
//	 "table_version":7,"partition_count":271,"safe":true}
//
// (zone and host appear in a member's object only when set.)
//
// # map
//
//	gridctl map put NAME KEY VALUE [--ttl 10s]   # VALUE "-" reads it from stdin
//	gridctl map get NAME KEY                     # prints exactly the value, no newline
//	gridctl map delete NAME KEY                  # exit 1 if the key was absent
//	gridctl map size NAME                        # prints the number of live entries
//	gridctl map keys NAME [--unsorted]           # prints every key, one per line, sorted
//	gridctl map entries NAME                     # KEY<TAB>VALUE lines, page by page
//	gridctl map listen NAME [KEY] [--values]     # prints changes until interrupted
//	gridctl map getall NAME [KEY...]             # KEY<TAB>VALUE of the live keys
//	gridctl map putall NAME [KEY VALUE...]       # or KEY<TAB>VALUE lines on stdin
//	gridctl map deleteall NAME [KEY...]          # prints how many were present
//
// keys, entries and the walks behind them fetch one bounded page at a time
// (at most 1000 entries or 1 MiB per request), so a map of any size can be
// listed; keys sorts what it collected unless --unsorted prints the pages
// as they arrive (partition by partition, sorted within each). listen
// prints "KIND PARTITION:SEQ KEY [VALUE]" per change (added, updated,
// removed, expired) and "lost P:SEQ" when events were lost (the per
// partition sequence skipped), with --json one object per line; --count N
// exits after N events. getall and deleteall read keys from stdin (one
// per line) when none are given, putall KEY<TAB>VALUE lines.
//
// map keys prints a key that is not printable (a newline, an escape
// sequence, invalid UTF-8) or that starts with a double quote Go-quoted
// ("a\nb"), so that no key can forge lines or drive the terminal; --raw
// prints keys exactly, --json as a JSON list. --msgpack makes put store a
// JSON VALUE msgpack-encoded, as Go's maps.NewTyped does, and get decode
// it back to JSON. Errors quote at most 64 bytes of a key.
//
// For example:
//
//	gridctl map put users alice '{"age":30}' --msgpack   # read by maps.NewTyped[User]
//	gzip < report.pdf | gridctl map put files report.pdf.gz -
//	gridctl map get files report.pdf.gz | gunzip > report.pdf
//
// A missing key makes get print nothing on stdout, say
// `key "K" not found in map "NAME"` on stderr and exit 1, so scripts can
// test presence with the exit status. A VALUE starting with "-" must follow
// "--" (gridctl map put m k -- -5).
//
// # bench
//
// bench is a load generator in the spirit of redis-benchmark: --clients
// goroutines share one client (and its multiplexed connections) and issue
// gets and puts of --value-size bytes on keys drawn uniformly from
// key:0 .. key:N-1 of map --map, for --requests operations in total or for
// --duration:
//
//	gridctl bench --clients 50 --requests 200000 --ratio 0:1 --prefill
//	gridctl bench --duration 30s --ratio 9:1 --json
//
// Flags: --clients N (50), --requests N (100000) or --duration D, --keys N
// (100000), --value-size N (100), --ratio GETS:PUTS (1:1), --map NAME
// (bench), --prefill (put every key once before measuring), --json.
//
// It reports operations, errors, seconds, operations per second, gets and
// puts, and the p50/p90/p99/p99.9 latency of successful operations, from a
// log-bucket histogram accurate to 0.2%. With --json it prints one object:
//
//	{"ops":200000,"errors":0,"seconds":1.52,"ops_per_sec":131578.9,"p50_ms":0.31,
//	 "p90_ms":0.62,"p99_ms":1.4,"p999_ms":3.1,"gets":0,"puts":200000,"clients":50,"value_size":100}
//
// Failed operations are counted, not fatal; the first error is printed on
// stderr at the end. When stderr is a terminal a progress line is refreshed
// every 500ms. Ctrl-C stops the run and prints the partial results.
//
// # lock and elect
//
//	gridctl lock run NAME [--lease D] [--wait D] -- CMD [ARGS...]
//	gridctl lock status NAME [--json]
//	gridctl lock force-unlock NAME
//	gridctl elect NAME [--wait D] [--check D] -- CMD [ARGS...]
//
// lock run waits for the distributed lock NAME (FIFO), runs CMD with
// SHOAL_FENCE set to the lock's fencing token, and releases the lock when
// CMD exits, like flock or etcdctl lock. It exits with CMD's status (128+N
// when signal N killed it), or 1 with a message when the lock was not
// acquired within --wait. If gridctl dies, its session ends after the
// session TTL and the lock passes to the next waiter:
//
//	gridctl lock run nightly-report --wait 1m -- ./report.sh
//
// elect runs CMD while this gridctl leads election NAME, with SHOAL_TERM
// set to the term (a fencing token). When leadership is lost, CMD gets
// SIGTERM (SIGKILL 10 s later) and gridctl exits 1; when CMD exits,
// gridctl resigns and exits with CMD's status.
//
// # rmap
//
// rmap reads and writes replicated maps (package replicated): every member
// holds a full copy, the member a call reaches answers from its own copy,
// and writes reach the other members in the background (the newest write
// of a key wins):
//
//	gridctl rmap put routes orders http://orders:8080
//	gridctl rmap get routes orders        # exit 1 if absent
//	gridctl rmap list routes              # KEY=VALUE lines (--json: with versions)
//	gridctl rmap delete routes orders
//	gridctl rmap len routes
//
// # member
//
//	gridctl member remove NAME [--force]
//
// removes member NAME, which crashed or disappeared for good, from the
// cluster's expected size (the voters its quorum counts; crashes never
// lower it by themselves). It is refused while NAME is alive and, unless
// --force is given, while the coordinator has no quorum; --force is only
// for members known to be gone (see docs/quorum.md).
//
// # Exit status
//
// 0 on success; 1 when the command failed (cluster unreachable, key not
// found, value too large, bench operations failed, ...); 2 for a usage error
// (unknown command or subcommand, missing argument, bad flag). Every failure
// is reported as one line on stderr. lock run and elect exit with their
// command's status instead.
package main
