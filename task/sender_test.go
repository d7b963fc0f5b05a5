package task

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
)

// rejectingSender refuses every event of one topic for good, as containerd
// does an event it cannot accept, and delivers the rest.
type rejectingSender struct {
	topic string

	mu        sync.Mutex // guards delivered
	delivered []string
}

func (r *rejectingSender) Send(_ context.Context, env *eventsapi.Envelope) error {
	if env.Topic == r.topic {
		return status.Error(codes.InvalidArgument, "event rejected")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivered = append(r.delivered, env.Topic)
	return nil
}

// TestPublisherDropsRejectedEvent: an event containerd refuses for good is
// dropped after maxRejections attempts, and the events behind it go out.
func TestPublisherDropsRejectedEvent(t *testing.T) {
	r := &rejectingSender{topic: "/tasks/oom"}
	p := runPublisher(t, r)
	p.Publish("/tasks/oom", &events.TaskOOM{ContainerId: "c1"})
	p.Publish("/tasks/exit", &events.TaskExit{ContainerId: "c1"})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush behind a rejected event: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(r.delivered, []string{"/tasks/exit"}) || rejected(p) != 1 {
		t.Fatalf("delivered %v, rejected %d; want the exit, and one rejected", r.delivered, rejected(p))
	}
}

// TestPermanent: only statuses that no retry changes count as rejections.
func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.InvalidArgument, "x"), true},
		{status.Error(codes.NotFound, "x"), true},
		{status.Error(codes.Unavailable, "x"), false},
		{status.Error(codes.DeadlineExceeded, "x"), false},
		{status.Error(codes.Unknown, "x"), false},
		{context.DeadlineExceeded, false},
		{errors.New("dial unix: connection refused"), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// rejected returns how many events containerd refused for good (see
// maxRejections); each was logged when it was dropped.
func rejected(p *Publisher) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rejected
}
