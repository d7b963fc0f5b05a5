package main

import (
	"context"

	"github.com/leanshim/leanshim/reaper"
)

// withReaper runs fn with a reaper of its own, for the short-lived actions
// (delete, -info) whose children must be reaped too; that process is not a
// subreaper, so the reaper sees only its own children.
func withReaper(ctx context.Context, fn func(*reaper.Reaper) error) error {
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // owned here: stopped by cancel, joined below
		defer close(done)
		_ = r.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	return fn(r)
}
