package task

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
)

// defaultRuntimeRoot is where runc keeps state, as containerd-shim-runc-v2
// uses it; the namespace is appended, so `runc --root
// /run/containerd/runc/<ns> list` keeps working after swapping shims.
const defaultRuntimeRoot = "/run/containerd/runc"

// decodeOptions reads the runtime options containerd sends with Create (or
// on the start action's stdin): containerd.runc.v1.Options from Go clients,
// or runtimeoptions.v1.Options (CRI and ctr --runtime-config-path for
// runtime types other than runc's). No options means the defaults.
func decodeOptions(a *gogotypes.Any) (*runcopts.Options, error) {
	if a == nil || (a.TypeUrl == "" && len(a.Value) == 0) {
		return &runcopts.Options{}, nil
	}
	switch strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/") {
	case proto.MessageName(&runcopts.Options{}):
		var o runcopts.Options
		if err := proto.Unmarshal(a.Value, &o); err != nil {
			return nil, fmt.Errorf("runtime options %s: %w: %w", a.TypeUrl, err, errInvalid)
		}
		return &o, nil
	case proto.MessageName(&runtimeoptions.Options{}):
		var o runtimeoptions.Options
		if err := proto.Unmarshal(a.Value, &o); err != nil {
			return nil, fmt.Errorf("runtime options %s: %w: %w", a.TypeUrl, err, errInvalid)
		}
		if o.ConfigPath != "" || len(o.ConfigBody) > 0 {
			return nil, fmt.Errorf("runtime options config file %q: %w", o.ConfigPath, errUnsupported)
		}
		return &runcopts.Options{}, nil
	}
	return nil, fmt.Errorf("unknown runtime options type %q: %w", a.TypeUrl, errInvalid)
}

// DecodeOptions is decodeOptions for the shim's start action (stdin).
func DecodeOptions(a *gogotypes.Any) (*runcopts.Options, error) { return decodeOptions(a) }

// runtimeConfig builds the OCI runtime client config of a container.
func (s *Service) runtimeConfig(bundle string, o *runcopts.Options) process.RuntimeConfig {
	root := o.Root
	if root == "" {
		root = defaultRuntimeRoot
	}
	return process.RuntimeConfig{
		Binary:        o.BinaryName,
		Root:          filepath.Join(root, s.cfg.Namespace),
		Log:           filepath.Join(bundle, "log.json"),
		SystemdCgroup: o.SystemdCgroup,
	}
}
