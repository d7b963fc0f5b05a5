package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/reaper"
)

// deleteTimeout keeps the action inside containerd's 5 s cleanup timeout.
const deleteTimeout = 4 * time.Second

// deleteAction is the "delete" action: containerd runs it whenever its
// connection to a shim closes, after a normal delete as after a crash. It
// works from the bundle alone (process's Cleanup), is idempotent, and prints
// only a DeleteResponse: the init's exit as the shim recorded it (containerd
// 2.x's runc shim does the same), or else that it was killed (137) now.
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
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	var e process.Exit
	// A reaper of its own: this short-lived process is not a subreaper.
	err := withReaper(ctx, func(r *reaper.Reaper) error {
		var err error
		e, err = process.NewFactory(r).Cleanup(ctx, bundle, cfg.id, cfg.namespace)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err) // a warning: the exit is still reported
	}
	// A sandbox's bundle (sandbox API): end its holder, unmount its /dev/shm.
	if err := pod.Cleanup(bundle, cfg.id); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
	}
	removeDeadSocket(bundle)

	out, err := proto.Marshal(deleteResponse(e))
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// deleteResponse is e as containerd reads it.
func deleteResponse(e process.Exit) *taskapi.DeleteResponse {
	resp := &taskapi.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: uint32(e.Status)}
	resp.ExitedAt, _ = gogotypes.TimestampProto(e.At)
	return resp
}

// removeDeadSocket removes the shim socket named in the bundle's address
// file when no shim answers on it any more (the shim was killed).
func removeDeadSocket(bundle string) {
	address, err := process.ReadAddress(bundle)
	if err != nil {
		return
	}
	path := socketPath(address)
	if !strings.HasPrefix(path, "/") || socketAlive(path) {
		return
	}
	_ = os.Remove(path)
}
