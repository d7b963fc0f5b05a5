package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/reaper"
)

// deleteTimeout keeps the action inside containerd's 5 s cleanup timeout.
const deleteTimeout = 4 * time.Second

// deleteAction is the "delete" action: containerd runs it whenever its
// connection to a shim closes, after a normal delete as after a crash. It
// works from the bundle alone, is idempotent, and prints only a
// DeleteResponse: the init's exit as the shim recorded it (containerd 2.x's
// runc shim does the same), or else that it was killed (137) now.
func deleteAction(cfg config, stdout, stderr io.Writer) error {
	bundle := cfg.bundle
	if bundle == "" {
		var err error
		if bundle, err = os.Getwd(); err != nil {
			return err
		}
	}
	if cfg.id == "" {
		return errors.New("delete needs -id")
	}
	warn := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	rc, err := process.LoadRuntimeConfig(bundle)
	if err != nil {
		// Create never got that far: only the defaults can have been used.
		rc = process.RuntimeConfig{Root: filepath.Join("/run/containerd/runc", cfg.namespace), Log: filepath.Join(bundle, "log.json")}
	}
	if err := forceDelete(cfg.id, rc); err != nil {
		warn("runtime delete: %v", err)
	}
	killedAt := time.Now() // right after the forced delete, as the runc shim does
	if err := process.UnmountRootfs(bundle); err != nil {
		warn("%v", err)
	}
	removeDeadSocket(bundle)

	out, err := proto.Marshal(deleteResponse(bundle, killedAt, warn))
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// deleteResponse is the recorded exit of the init, or, when there is none
// (the shim died while it ran), a SIGKILL at killedAt with the pid runc
// wrote.
func deleteResponse(bundle string, killedAt time.Time, warn func(string, ...any)) *taskapi.DeleteResponse {
	e, err := process.LoadExit(bundle)
	if err == nil {
		resp := &taskapi.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: uint32(e.Status)}
		resp.ExitedAt, _ = gogotypes.TimestampProto(e.At)
		return resp
	}
	if !errors.Is(err, os.ErrNotExist) {
		warn("%v", err)
	}
	resp := &taskapi.DeleteResponse{ExitStatus: 128 + 9}
	resp.ExitedAt, _ = gogotypes.TimestampProto(killedAt)
	if b, err := os.ReadFile(filepath.Join(bundle, "init.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			resp.Pid = uint32(pid)
		}
	}
	return resp
}

// forceDelete runs the runtime's "delete --force" through a reaper of its own
// (this short-lived process is not a subreaper).
func forceDelete(id string, rc process.RuntimeConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	return withReaper(ctx, func(r *reaper.Reaper) error {
		err := process.NewFactory(r).NewRuntime(rc).Delete(ctx, id, true)
		if errors.Is(err, oci.ErrNotExist) {
			return nil // already gone: delete is idempotent
		}
		return err
	})
}

// removeDeadSocket removes the shim socket named in the bundle's address
// file when no shim answers on it any more (the shim was killed).
func removeDeadSocket(bundle string) {
	b, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return
	}
	path := socketPath(string(b))
	if !strings.HasPrefix(path, "/") || socketAlive(path) {
		return
	}
	_ = os.Remove(path)
}
