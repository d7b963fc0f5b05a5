package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/containerd/ttrpc"

	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/task"
)

// brokenListener fails every Accept for good, as a listener whose fd was
// closed under it would.
type brokenListener struct{ net.Listener }

func (brokenListener) Accept() (net.Conn, error) {
	return nil, errors.New("accept: broken for the test")
}
func (brokenListener) Close() error { return nil }
func (brokenListener) Addr() net.Addr {
	return &net.UnixAddr{Name: "/nonexistent/broken.sock", Net: "unix"}
}

type discardSender struct{}

func (discardSender) Send(context.Context, *eventsapi.Envelope) error { return nil }

// TestServeFailureExitsNonZero: when the ttrpc server fails, the daemon
// stops in order and reports the failure, so the shim exits non-zero
// (issue 13, item 11).
func TestServeFailureExitsNonZero(t *testing.T) {
	api := shimAPI{
		log:    slog.New(slog.DiscardHandler),
		sender: func(*reaper.Reaper) task.Sender { return discardSender{} },
		events: func(p *task.Publisher) task.Events { return p },
		register: func(srv *ttrpc.Server, core taskapi.TaskService, _ *task.Publisher) func(context.Context) error {
			taskapi.RegisterTaskService(srv, core)
			return nil
		},
	}
	err := serveOn(config{namespace: "test", id: "c"}, api, brokenListener{}, make(chan os.Signal))
	if err == nil {
		t.Fatal("serveOn after the server failed: want an error, so the shim exits non-zero; got nil")
	}
	t.Log(err)
}
