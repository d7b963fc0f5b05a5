#!/usr/bin/env bash
# Enforces the import direction of STYLE.md §3:
#   cmd/shim → task → process → {oci → reaper, stdio}; task → pod → reaper,
#   cgroup; proto is a leaf;
#   integration sees only proto (and the built binary). procfs is a leaf
#   under reaper and stdio: the /proc parsing both need, which neither may
#   take from the other.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=github.com/leanshim/leanshim

# allowed[pkg] = project packages it may import (prefix match on proto/).
declare -A allowed=(
  [procfs]=""
  [leakcheck]=""
  [reaper]="procfs"
  [stdio]="procfs"
  [oci]="reaper"
  [cgroup]="proto"
  [process]="oci reaper stdio"
  [pod]="reaper cgroup"
  [task]="process proto cgroup pod"
  [integration]="proto"
)
# Tests may also wire what cmd/shim wires (a composition root): the task
# fuzz harness builds a process factory on a real reaper.
# stdio's and reaper's TestMain fail on leaked goroutines and fds through
# the test-only leakcheck package.
declare -A testAllowed=(
  [task]="reaper"
  [stdio]="leakcheck"
  [reaper]="leakcheck"
)

fail=0
while read -r pkg kind imports; do
  rel=${pkg#"$mod"/}
  top=${rel%%/*}
  [[ $top == cmd || $top == proto ]] && rules=skip || rules=${allowed[$top]-unknown}
  if [[ $top == proto ]]; then rules="proto"; fi
  [[ $rules == skip ]] && continue
  if [[ $rules == unknown ]]; then
    echo "check-imports: package $rel has no rule in scripts/check-imports.sh"; fail=1; continue
  fi
  for imp in $imports; do
    [[ $imp == "$mod"/* ]] || continue
    dep=${imp#"$mod"/}; deptop=${dep%%/*}
    [[ $deptop == "$top" ]] && continue
    ok=0
    extra=""
    [[ $kind == test ]] && extra=${testAllowed[$top]-}
    for a in $rules $extra; do [[ $deptop == "$a" ]] && ok=1; done
    if [[ $ok == 0 ]]; then echo "check-imports: $rel must not import $dep"; fail=1; fi
  done
done < <(go list -f '{{.ImportPath}} prod {{join .Imports " "}}
{{.ImportPath}} test {{join .TestImports " "}} {{join .XTestImports " "}}' ./...)
exit $fail
