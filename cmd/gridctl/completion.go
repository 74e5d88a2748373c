package main

import (
	"fmt"
	"strings"
)

// Words completed by the shell scripts, space-separated. TestCompletionWords
// checks them against the help texts, so a new command or flag is not
// forgotten here.
const (
	completionCommands    = "status map queue idem rmap lock elect member bench completion version help"
	completionMapSubs     = "put get delete size keys entries listen getall putall deleteall"
	completionQueueSubs   = "offer poll drain len bench"
	completionLockSubs    = "run status force-unlock"
	completionRmapSubs    = "put get delete list len"
	completionGlobalFlags = "--addr --timeout --cluster --json --help --version --token-file --tls-ca --tls-cert --tls-key"
	completionQueueFlags  = "--wait --max --clients --queues --duration --value-size"
	completionLockFlags   = "--lease --wait"
	completionMapFlags    = "--ttl --msgpack --raw --unsorted --values --count"
	completionBenchFlags  = "--clients --requests --duration --keys --value-size --ratio --map --prefill"
	completionShells      = "bash zsh fish"
)

// completionCmd implements "gridctl completion SHELL": it prints a script
// that the shell sources, e.g. source <(gridctl completion bash).
func completionCmd(e env, args []string) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		printHelp(e.stdout, "completion")
		return errHelpShown
	}
	if len(args) != 1 {
		return usagef("completion", "completion needs one shell: %s", completionShells)
	}
	var script string
	switch args[0] {
	case "bash":
		script = bashCompletion()
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		script = "#compdef gridctl\nautoload -U +X bashcompinit && bashcompinit\n" + bashCompletion()
	case "fish":
		script = fishCompletion()
	default:
		return usagef("completion", "unknown shell %s: want %s", clip(args[0]), completionShells)
	}
	_, err := fmt.Fprint(e.stdout, script)
	return err
}

// bashCompletion completes commands, map subcommands and flags.
func bashCompletion() string {
	return `# bash completion for gridctl: source <(gridctl completion bash)
_gridctl() {
	local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" sub="" i w
	for ((i = 1; i < COMP_CWORD; i++)); do
		w="${COMP_WORDS[i]}"
		case "$w" in
		--addr|--timeout|--cluster|--ttl|--count|--clients|--requests|--duration|--keys|--value-size|--ratio|--map|--wait|--max|--queues|--lease|--token-file|--tls-ca|--tls-cert|--tls-key) ((i++)); continue ;;
		-*) continue ;;
		esac
		if [[ -z $cmd ]]; then cmd="$w"; elif [[ -z $sub ]]; then sub="$w"; fi
	done
	local flags="` + completionGlobalFlags + `"
	case "$cmd" in
	map) flags="$flags ` + completionMapFlags + `" ;;
	bench) flags="$flags ` + completionBenchFlags + `" ;;
	queue) flags="$flags ` + completionQueueFlags + `" ;;
	lock) flags="$flags ` + completionLockFlags + `" ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		return
	fi
	case "$cmd" in
	"") COMPREPLY=($(compgen -W "` + completionCommands + `" -- "$cur")) ;;
	map) [[ -z $sub ]] && COMPREPLY=($(compgen -W "` + completionMapSubs + `" -- "$cur")) ;;
	queue) [[ -z $sub ]] && COMPREPLY=($(compgen -W "` + completionQueueSubs + `" -- "$cur")) ;;
	lock) [[ -z $sub ]] && COMPREPLY=($(compgen -W "` + completionLockSubs + `" -- "$cur")) ;;
	idem) [[ -z $sub ]] && COMPREPLY=($(compgen -W "claim" -- "$cur")) ;;
	rmap) [[ -z $sub ]] && COMPREPLY=($(compgen -W "` + completionRmapSubs + `" -- "$cur")) ;;
	member) [[ -z $sub ]] && COMPREPLY=($(compgen -W "remove" -- "$cur")) ;;
	completion) [[ -z $sub ]] && COMPREPLY=($(compgen -W "` + completionShells + `" -- "$cur")) ;;
	help) [[ -z $sub ]] && COMPREPLY=($(compgen -W "status map queue idem rmap lock elect member bench completion" -- "$cur")) ;;
	esac
}
complete -F _gridctl gridctl
`
}

// fishCompletion completes commands, map subcommands and flags.
func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# fish completion for gridctl: gridctl completion fish | source\n")
	b.WriteString("complete -c gridctl -f\n")
	fmt.Fprintf(&b, "complete -c gridctl -n __fish_use_subcommand -a '%s'\n", completionCommands)
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from map' -a '%s'\n", completionMapSubs)
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from queue' -a '%s'\n", completionQueueSubs)
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from lock' -a '%s'\n", completionLockSubs)
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from idem' -a claim\n")
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from rmap' -a '%s'\n", completionRmapSubs)
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from member' -a remove\n")
	fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from completion' -a '%s'\n", completionShells)
	for f := range strings.FieldsSeq(completionGlobalFlags) {
		fmt.Fprintf(&b, "complete -c gridctl -l %s\n", strings.TrimPrefix(f, "--"))
	}
	for f := range strings.FieldsSeq(completionMapFlags) {
		fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from map' -l %s\n", strings.TrimPrefix(f, "--"))
	}
	for f := range strings.FieldsSeq(completionQueueFlags) {
		fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from queue' -l %s\n", strings.TrimPrefix(f, "--"))
	}
	for f := range strings.FieldsSeq(completionLockFlags) {
		fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from lock' -l %s\n", strings.TrimPrefix(f, "--"))
	}
	for f := range strings.FieldsSeq(completionBenchFlags) {
		fmt.Fprintf(&b, "complete -c gridctl -n '__fish_seen_subcommand_from bench' -l %s\n", strings.TrimPrefix(f, "--"))
	}
	return b.String()
}
