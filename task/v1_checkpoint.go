package task

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
)

// checkpointOptions turns a v1 checkpoint's options into the core's
// containerd.runc.v1.CheckpointOptions. containerd 1.6's ctr sends
// containerd.linux.runc.CheckpointOptions to the v1 runtime, whose
// image_path and work_path have other field numbers than runc.v1's, so the
// fields are copied one by one. The work path defaults to the shim's
// -workdir, as containerd-shim did (runtime/v1/shim/service.go passes its
// WorkDir): the core's default, <bundle>/work/criu-work, does not exist
// in a v1 bundle, which has no "work" link. A runc.v1 CheckpointOptions
// is accepted as well and gets the same default.
func (v *V1) checkpointOptions(a *gogotypes.Any) (*gogotypes.Any, error) {
	var o runcopts.CheckpointOptions
	if a != nil && (a.TypeUrl != "" || len(a.Value) > 0) {
		switch name := strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/"); name {
		case proto.MessageName(&runctypes.CheckpointOptions{}):
			var c runctypes.CheckpointOptions
			if err := proto.Unmarshal(a.Value, &c); err != nil {
				return nil, fmt.Errorf("checkpoint options %s: %w: %w", a.TypeUrl, err, errInvalid)
			}
			o = runcopts.CheckpointOptions{
				Exit: c.Exit, OpenTcp: c.OpenTcp, ExternalUnixSockets: c.ExternalUnixSockets,
				Terminal: c.Terminal, FileLocks: c.FileLocks, EmptyNamespaces: c.EmptyNamespaces,
				CgroupsMode: c.CgroupsMode, ImagePath: c.ImagePath, WorkPath: c.WorkPath,
			}
		case proto.MessageName(&o):
			if err := proto.Unmarshal(a.Value, &o); err != nil {
				return nil, fmt.Errorf("checkpoint options %s: %w: %w", a.TypeUrl, err, errInvalid)
			}
		default:
			return nil, fmt.Errorf("unknown checkpoint options type %q: %w", a.TypeUrl, errInvalid)
		}
	}
	o.WorkPath = cmp.Or(o.WorkPath, v.cfg.Workdir)
	return marshalAny(&o)
}
