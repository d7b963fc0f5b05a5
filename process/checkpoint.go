package process

import (
	"context"
	"fmt"

	"github.com/leanshim/leanshim/oci"
)

// CheckpointConfig describes a checkpoint of a container (CRIU through the
// runtime).
type CheckpointConfig struct {
	Path                string // image directory
	WorkPath            string // "" means <bundle>/work/criu-work
	ParentPath          string // a pre-dump to build on
	Exit                bool   // stop the container after the dump
	OpenTCP             bool
	ExternalUnixSockets bool
	Terminal            bool
	FileLocks           bool
	EmptyNamespaces     []string
}

// Checkpoint dumps a Running or Paused container. With Exit the container
// stops and its exit is reported as usual.
func (p *Init) Checkpoint(ctx context.Context, cfg CheckpointConfig) error {
	return p.runtimeOp("checkpoint", func(s State) error {
		if s != Running && s != Paused {
			return fmt.Errorf("cannot checkpoint a %s process: %w", s, ErrInvalidState)
		}
		return nil
	}, func() error {
		return p.rt.Checkpoint(ctx, p.id, oci.CheckpointOpts{
			Bundle: p.bundle, ImagePath: cfg.Path, WorkPath: cfg.WorkPath, ParentPath: cfg.ParentPath, Exit: cfg.Exit,
			OpenTCP: cfg.OpenTCP, ExternalUnixSockets: cfg.ExternalUnixSockets, Terminal: cfg.Terminal,
			FileLocks: cfg.FileLocks, EmptyNamespaces: cfg.EmptyNamespaces,
		})
	})
}
