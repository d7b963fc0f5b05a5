package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// CheckpointOpts are the options of Checkpoint: containerd's
// CheckpointTaskRequest path and its containerd.runc.v1.CheckpointOptions.
type CheckpointOpts struct {
	Bundle     string // required: criu-dump.log is left here on failure
	ImagePath  string // --image-path: the directory CRIU writes the images to
	WorkPath   string // --work-path; "" means <Bundle>/work/criu-work, removed afterwards
	ParentPath string // --parent-path: a pre-dump the images build on
	Exit       bool   // stop the container after the dump; otherwise --leave-running

	OpenTCP             bool     // --tcp-established
	ExternalUnixSockets bool     // --ext-unix-sk
	Terminal            bool     // --shell-job
	FileLocks           bool     // --file-locks
	EmptyNamespaces     []string // --empty-ns, once each
}

// RestoreOpts are the options of Restore, the Start of a container created
// from a checkpoint.
type RestoreOpts struct {
	Bundle        string // --bundle
	PidFile       string // --pid-file; absolute, like Bundle
	ConsoleSocket string // --console-socket, for a terminal
	NoPivot       bool   // --no-pivot
	ImagePath     string // --image-path: the checkpoint to restore
	WorkPath      string // --work-path; "" means <Bundle>/work, as containerd
	ParentPath    string // --parent-path
	Stdio         Stdio  // the restored process's fds 0-2, as for Create
}

// CheckpointError is a failed checkpoint. Its text is containerd's: the first
// line of the runtime's message, then "path= " and the copy of CRIU's dump
// log kept next to the bundle (the work directory may be gone). errors.Is and
// errors.As see the runtime's error through Unwrap.
type CheckpointError struct {
	Err     error
	DumpLog string // <bundle>/criu-dump.log
}

func (e *CheckpointError) Error() string {
	first, _, _ := strings.Cut(e.Err.Error(), "\n")
	return first + " path= " + e.DumpLog
}

// Unwrap returns the runtime's error.
func (e *CheckpointError) Unwrap() error { return e.Err }

// Checkpoint runs "checkpoint": CRIU dumps the container into o.ImagePath,
// and the container keeps running unless o.Exit. On failure CRIU's dump.log
// is copied to <bundle>/criu-dump.log and a *CheckpointError names it.
func (r *Runtime) Checkpoint(ctx context.Context, id string, o CheckpointOpts) error {
	if o.Bundle == "" {
		return fmt.Errorf("checkpoint %s: no bundle", id)
	}
	if o.WorkPath == "" {
		o.WorkPath = filepath.Join(o.Bundle, "work", "criu-work")
		// containerd keeps only a work path it was given.
		defer func() { _ = os.RemoveAll(o.WorkPath) }() // scratch; nothing to keep on error either: the log is copied
	}
	_, err := r.run(ctx, checkpointArgs(id, o), nil, nil)
	if err == nil {
		return nil
	}
	dumpLog := filepath.Join(o.Bundle, "criu-dump.log")
	if cerr := copyFile(dumpLog, filepath.Join(o.WorkPath, "dump.log")); cerr != nil {
		// CRIU may have failed before writing a log; the error still names
		// the path, as containerd's does.
		err = errors.Join(err, fmt.Errorf("keep criu dump log: %w", cerr))
	}
	return &CheckpointError{Err: err, DumpLog: dumpLog}
}

// Restore runs "restore --detach": the container is running again from
// o.ImagePath when Restore returns nil, and its init's pid is in o.PidFile.
// The runtime does not become a subreaper (-no-subreaper), so the restored
// init is re-parented to the shim, which reaps it.
func (r *Runtime) Restore(ctx context.Context, id string, o RestoreOpts) error {
	if o.WorkPath == "" {
		o.WorkPath = filepath.Join(o.Bundle, "work")
	}
	_, err := r.run(ctx, restoreArgs(id, o), &o.Stdio, nil)
	return err
}

// checkpointArgs follows go-runc v1.0.0 CheckpointOpts.args, then the
// --leave-running action, then the id.
func checkpointArgs(id string, o CheckpointOpts) []string {
	args := append([]string{"checkpoint"}, criuArgs(o.ImagePath, o.WorkPath, o.ParentPath)...)
	flags := []struct {
		on   bool
		flag string
	}{
		{o.OpenTCP, "--tcp-established"},
		{o.ExternalUnixSockets, "--ext-unix-sk"},
		{o.Terminal, "--shell-job"},
		{o.FileLocks, "--file-locks"},
	}
	for _, f := range flags {
		if f.on {
			args = append(args, f.flag)
		}
	}
	for _, ns := range o.EmptyNamespaces {
		args = append(args, "--empty-ns", ns)
	}
	if !o.Exit {
		args = append(args, "--leave-running")
	}
	return append(args, id)
}

// restoreArgs follows go-runc v1.0.0 RestoreOpts.args and Restore, with the
// options containerd's runc shim sets (PROTOCOL.md §5). runc spells
// -no-subreaper with one dash there; its flag parser takes both.
func restoreArgs(id string, o RestoreOpts) []string {
	args := append([]string{"restore"}, criuArgs(o.ImagePath, o.WorkPath, o.ParentPath)...)
	args = append(args, "--detach", "--pid-file", o.PidFile)
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	if o.NoPivot {
		args = append(args, "--no-pivot")
	}
	return append(args, "-no-subreaper", "--bundle", o.Bundle, id)
}

// criuArgs are the image, work and parent paths, each only when set.
func criuArgs(image, work, parent string) []string {
	var args []string
	for _, p := range []struct{ flag, value string }{
		{"--image-path", image}, {"--work-path", work}, {"--parent-path", parent},
	} {
		if p.value != "" {
			args = append(args, p.flag, p.value)
		}
	}
	return args
}

// copyFile copies from to to, replacing to.
func copyFile(to, from string) (retErr error) {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close() // read-only
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	defer func() {
		if err := dst.Close(); retErr == nil {
			retErr = err
		}
	}()
	_, err = io.Copy(dst, src)
	return err
}
