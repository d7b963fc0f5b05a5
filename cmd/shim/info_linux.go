package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/introspection"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/task"
)

const (
	// runtimeName is the runtime type containerd knows this shim by.
	runtimeName = "io.containerd.lean.v2"
	// featuresTypeURL is the type of RuntimeInfo.features: the OCI runtime's
	// `features` document, JSON (containerd core/runtime/typeurl.go).
	featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
	// featuresTimeout bounds `<runtime> features`.
	featuresTimeout = 4 * time.Second
)

// infoAction is the -info action of containerd 2.x (PROTOCOL.md §1.3): stdin
// holds an optional marshaled runtime options Any; stdout gets only a
// marshaled containerd.types.RuntimeInfo with the shim's name and version,
// the options echoed, and the OCI runtime's features when it has a
// `features` command (runc ≥ 1.1; without one, as containerd's runc shim
// does, the features are left out).
func infoAction(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, maxStdin))
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	info := &introspection.RuntimeInfo{
		Name:    runtimeName,
		Version: &introspection.RuntimeVersion{Version: version},
	}
	var opts *gogotypes.Any
	if len(b) > 0 {
		opts = &gogotypes.Any{}
		if err := proto.Unmarshal(b, opts); err != nil {
			return fmt.Errorf("stdin is not an options Any: %w", err)
		}
		info.Options = opts
	}
	o, err := task.DecodeOptions(opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), featuresTimeout)
	defer cancel()
	if feat, err := runtimeFeatures(ctx, cmp.Or(o.BinaryName, "runc")); err == nil {
		info.Features = &gogotypes.Any{TypeUrl: featuresTypeURL, Value: feat}
	}
	out, err := proto.Marshal(info)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// runtimeFeatures returns the JSON of `<binary> features`.
func runtimeFeatures(ctx context.Context, binary string) ([]byte, error) {
	var out []byte
	err := withReaper(ctx, func(r *reaper.Reaper) error {
		var e reaper.Exit
		var err error
		out, e, err = r.RunCmd(ctx, exec.Command(binary, "features"), nil, true)
		switch {
		case err != nil:
			return err
		case e.Status != 0:
			return fmt.Errorf("%s features: exit status %d", binary, e.Status)
		case !json.Valid(out):
			return fmt.Errorf("%s features: not JSON", binary)
		}
		return nil
	})
	return out, err
}
