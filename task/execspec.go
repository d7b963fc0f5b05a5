package task

import (
	"encoding/json"
	"fmt"
)

// execSpec returns the exec's OCI Process JSON with "terminal" set to the
// request's Terminal, as containerd's runc shim sets it (process.Init.exec:
// spec.Terminal = r.Terminal). Clients may send a spec whose terminal
// disagrees with the request (containerd's own TestContainerExecLargeOutput
// WithTTY does), and runc refuses a console socket for a process that does
// not ask for a tty. Every other field passes through untouched, so fields
// this shim does not know still reach the runtime. A spec that is not a
// JSON object is InvalidArgument.
func execSpec(spec []byte, terminal bool) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(spec, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("spec is not a JSON OCI process: %w", errInvalid)
	}
	fields["terminal"] = json.RawMessage("false")
	if terminal {
		fields["terminal"] = json.RawMessage("true")
	}
	return json.Marshal(fields)
}
