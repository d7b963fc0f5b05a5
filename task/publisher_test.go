package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
)

// gateSender delivers an event only when the test lets it, and fails the
// first attempt at each event when flaky is set.
type gateSender struct {
	allow chan struct{} // one receive per delivery
	flaky bool

	mu     sync.Mutex
	topics []string
	failed map[string]bool
}

func (g *gateSender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	g.mu.Lock()
	if g.flaky && !g.failed[env.Topic] {
		g.failed[env.Topic] = true
		g.mu.Unlock()
		return errors.New("containerd away")
	}
	g.mu.Unlock()
	select {
	case <-g.allow:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	g.topics = append(g.topics, env.Topic)
	g.mu.Unlock()
	return nil
}

func runPublisher(t *testing.T, s Sender) *Publisher {
	t.Helper()
	p := NewPublisher(s, "ns", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // stopped and joined by the cleanup
		defer close(done)
		_ = p.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// TestPublisherFlush checks that Flush waits for exactly the events published
// before it, through a failed attempt, and honours its ctx.
func TestPublisherFlush(t *testing.T) {
	g := &gateSender{allow: make(chan struct{}), flaky: true, failed: map[string]bool{}}
	p := runPublisher(t, g)
	p.Publish("/tasks/exit", &events.TaskExit{ContainerId: "c1"})

	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	if err := p.Flush(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with the event undelivered = %v, want DeadlineExceeded", err)
	}

	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(t.Context()) }() // joined below
	g.allow <- struct{}{}                           // the exit, after its failed attempt
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	// Flush waits only for what was published before it.
	p.Publish("/tasks/delete", &events.TaskDelete{ContainerId: "c1"})
	if err := p.Flush(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with the delete undelivered = %v, want DeadlineExceeded", err)
	}
	g.allow <- struct{}{}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.topics) != 2 || g.topics[0] != "/tasks/exit" || g.topics[1] != "/tasks/delete" {
		t.Fatalf("delivered %v, want exit then delete", g.topics)
	}
}

func TestPublisherFlushAfterRunEnds(t *testing.T) {
	g := &gateSender{allow: make(chan struct{})}
	p := NewPublisher(g, "ns", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }() // joined below
	p.Publish("/tasks/exit", &events.TaskExit{})
	cancel()
	<-done
	if err := p.Flush(t.Context()); err != nil {
		t.Fatalf("Flush after Run ended = %v, want nil (nothing more will be delivered)", err)
	}
}

// waitingCtx closes waiting the first time Done is called: Flush calls it
// only once it has taken its target and found something to wait for.
type waitingCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *waitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// TestPublisherInOrderWithoutDrops checks that below the limit every event
// is delivered once and in order, through failed attempts.
func TestPublisherInOrderWithoutDrops(t *testing.T) {
	a := &flakySender{}
	p := runPublisher(t, a)
	topics := []string{"/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/paused"}
	var want []string
	for i := range 500 {
		id := fmt.Sprint(i)
		p.Publish(topics[i%len(topics)], testEvent(topics[i%len(topics)], id))
		want = append(want, id)
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var got []string
	for _, env := range a.received {
		got = append(got, eventID(t, env))
	}
	if !slices.Equal(got, want) || dropped(p) != 0 {
		t.Fatalf("delivered %d events (first difference at %d), dropped %d; want all %d in order",
			len(got), firstDiff(got, want), dropped(p), len(want))
	}
}

// flakySender fails every 125th attempt.
type flakySender struct {
	mu       sync.Mutex
	attempts int
	received []*eventsapi.Envelope
}

func (f *flakySender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.attempts%125 == 0 {
		return errors.New("containerd away")
	}
	f.received = append(f.received, env)
	return nil
}
