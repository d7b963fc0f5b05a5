package task

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"github.com/pelletier/go-toml/v2"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
)

// decodeOptions reads the runtime options containerd sends with Create (or
// on the start action's stdin): containerd.runc.v1.Options from Go clients,
// runtimeoptions.v1.Options (CRI and ctr --runtime-config-path for runtime
// types other than runc's), or, from containerd 1.6's client for runtime
// types other than runc's, containerd.linux.runc.CreateOptions (task
// options) or RuncOptions (container runtime options). No options means the
// defaults.
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
		return fromRuntimeOptions(&o)
	case proto.MessageName(&runctypes.CreateOptions{}):
		var c runctypes.CreateOptions
		if err := proto.Unmarshal(a.Value, &c); err != nil {
			return nil, fmt.Errorf("runtime options %s: %w: %w", a.TypeUrl, err, errInvalid)
		}
		return fromCreateOptions(&c), nil
	case proto.MessageName(&runctypes.RuncOptions{}):
		var c runctypes.RuncOptions
		if err := proto.Unmarshal(a.Value, &c); err != nil {
			return nil, fmt.Errorf("runtime options %s: %w: %w", a.TypeUrl, err, errInvalid)
		}
		return &runcopts.Options{
			BinaryName: c.Runtime, Root: c.RuntimeRoot, CriuPath: c.CriuPath, SystemdCgroup: c.SystemdCgroup,
		}, nil
	}
	return nil, fmt.Errorf("unknown runtime options type %q: %w", a.TypeUrl, errInvalid)
}

// fromCreateOptions reads containerd.linux.runc.CreateOptions, the task
// options containerd 1.6's client sends to a runtime whose name does not
// start with io.containerd.runc (WithNoPivotRoot, WithNoNewKeyring,
// WithShimCgroup, WithUIDOwner/WithGIDOwner; `ctr run --no-pivot`). 1.6
// sends them to Create and, being the task's options, to the start action's
// stdin too, where shim_cgroup is applied. The checkpoint fields (open_tcp,
// terminal, ...) mean nothing at create and are not read, as containerd's
// v1 shim does not read them either.
func fromCreateOptions(c *runctypes.CreateOptions) *runcopts.Options {
	return &runcopts.Options{
		NoPivotRoot: c.NoPivotRoot, NoNewKeyring: c.NoNewKeyring, ShimCgroup: c.ShimCgroup,
		IoUid: c.IoUid, IoGid: c.IoGid, CriuWorkPath: c.CriuWorkPath, CriuImagePath: c.CriuImagePath,
	}
}

// runcTOML is the runc options table as containerd's CRI config spells it
// ([...runtimes.<name>.options] with BinaryName, SystemdCgroup, ...). Keys it
// does not know (TypeUrl, ConfigPath, another runtime's) are ignored.
type runcTOML struct {
	BinaryName    string
	Root          string
	SystemdCgroup bool
	NoPivotRoot   bool
	NoNewKeyring  bool
	ShimCgroup    string
	IoUid         uint32
	IoGid         uint32
	CriuImagePath string
	CriuWorkPath  string
	CriuPath      string
}

// fromRuntimeOptions reads runtimeoptions.v1.Options: the TOML file at
// config_path (what containerd 1.6's CRI plugin and ctr
// --runtime-config-path send), then the TOML in config_body (containerd 2.x
// sends the handler's whole options table there), the body winning.
func fromRuntimeOptions(o *runtimeoptions.Options) (*runcopts.Options, error) {
	var t runcTOML
	if o.ConfigPath != "" {
		b, err := readConfigFile(o.ConfigPath)
		if err != nil {
			return nil, fmt.Errorf("runtime options config_path: %w: %w", err, errInvalid)
		}
		if err := toml.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("runtime options file %s: %w: %w", o.ConfigPath, err, errInvalid)
		}
	}
	if len(o.ConfigBody) > 0 {
		if err := toml.Unmarshal(o.ConfigBody, &t); err != nil {
			return nil, fmt.Errorf("runtime options config_body: %w: %w", err, errInvalid)
		}
	}
	return &runcopts.Options{
		BinaryName: t.BinaryName, Root: t.Root, SystemdCgroup: t.SystemdCgroup,
		NoPivotRoot: t.NoPivotRoot, NoNewKeyring: t.NoNewKeyring, ShimCgroup: t.ShimCgroup,
		IoUid: t.IoUid, IoGid: t.IoGid, CriuImagePath: t.CriuImagePath, CriuWorkPath: t.CriuWorkPath,
		CriuPath: t.CriuPath,
	}, nil
}

// maxConfigFile bounds a runtime options file: a real one is a few lines.
const maxConfigFile = 1 << 20

// readConfigFile reads a regular file of at most maxConfigFile bytes, so a
// config_path naming a FIFO, a device or a huge file cannot hang Create or
// exhaust the shim's memory.
func readConfigFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer; it is then refused below as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > maxConfigFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxConfigFile)
	}
	return io.ReadAll(io.LimitReader(f, maxConfigFile))
}

// DecodeOptions is decodeOptions for the shim's start action (stdin).
func DecodeOptions(a *gogotypes.Any) (*runcopts.Options, error) { return decodeOptions(a) }

// runtimeConfig builds the OCI runtime client config of a container.
func (s *Service) runtimeConfig(bundle string, o *runcopts.Options) process.RuntimeConfig {
	c := process.NewRuntimeConfig(bundle, s.cfg.Namespace, o.Root)
	c.Binary, c.SystemdCgroup, c.Criu = o.BinaryName, o.SystemdCgroup, o.CriuPath
	return c
}
