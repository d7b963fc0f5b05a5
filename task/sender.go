package task

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/eventsapi"
)

// This file is the Publisher's other side: what delivers an event
// (Sender, containerd's ttrpc events service) and how Run reads a failed
// delivery (permanent rejections, retry delays).

// Sender delivers one event envelope to containerd. Only Publisher.Run calls
// it, one call at a time; an error leaves the event queued for a retry. If a
// Sender is also an io.Closer, Run closes it when it returns.
type Sender interface {
	Send(ctx context.Context, env *eventsapi.Envelope) error
}

// TTRPCSender returns the Sender of a v2 shim: containerd's ttrpc events
// service at addr (a socket path; a unix:// prefix is accepted).
func TTRPCSender(addr string) Sender {
	return &ttrpcSender{addr: strings.TrimPrefix(addr, "unix://")}
}

// ttrpcSender forwards events to containerd's ttrpc events service, the way
// every v2 shim since containerd 1.3 does (PROTOCOL.md §3.1). It keeps one
// connection and redials after a failure.
type ttrpcSender struct {
	addr   string
	client *ttrpc.Client // owned by Run's goroutine: Send and Close run there
}

func (t *ttrpcSender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	if t.client == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		conn, err := d.DialContext(ctx, "unix", t.addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", t.addr, err)
		}
		t.client = ttrpc.NewClient(conn)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := eventsapi.NewEventsClient(t.client).Forward(fctx, &eventsapi.ForwardRequest{Envelope: env})
	if err != nil {
		_ = t.client.Close() // redial next time; nothing buffered to lose
		t.client = nil
	}
	return err
}

func (t *ttrpcSender) Close() error {
	if t.client == nil {
		return nil
	}
	return t.client.Close()
}

// backoff is 100ms, 200ms, ... doubling up to 10s.
func backoff(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures-1, 7)
	return min(d, 10*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxRejections is how many attempts in a row containerd must refuse an
// event with a status that no retry changes (permanent) before Run drops
// it. Until then a rejection is retried like any failure: a containerd that
// is starting up may refuse what it accepts a moment later.
const maxRejections = 3

// nextRejections returns the count of consecutive permanent rejections of
// the head event after an attempt that failed with err.
func nextRejections(n int, err error) int {
	if permanent(err) {
		return n + 1
	}
	return 0
}

// permanent reports whether err is containerd refusing the event itself (a
// status of a class that retrying cannot change), rather than containerd
// being away or slow.
func permanent(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented:
		return true
	}
	return false
}
