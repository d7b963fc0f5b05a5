package task

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
)

// execExit is the test kind of an exec's TaskExit, published on /tasks/exit.
const execExit = "exec-exit"

// testEvent returns an event of kind (a topic, or execExit) that the tests
// tell apart by id: see eventID.
func testEvent(kind, id string) proto.Message {
	switch kind {
	case execExit:
		return &events.TaskExit{ContainerId: "the-container", Id: id}
	case "/tasks/exit":
		return &events.TaskExit{ContainerId: id, Id: id}
	case "/tasks/oom":
		return &events.TaskOOM{ContainerId: id}
	case "/tasks/start":
		return &events.TaskStart{ContainerId: id}
	case "/tasks/exec-added":
		return &events.TaskExecAdded{ContainerId: id}
	case "/tasks/exec-started":
		return &events.TaskExecStarted{ContainerId: id}
	case "/tasks/paused":
		return &events.TaskPaused{ContainerId: id}
	}
	panic("testEvent: no event for " + kind)
}

// publishTest publishes testEvent(kind, id) on its topic.
func publishTest(p *Publisher, kind, id string) {
	topic := kind
	if kind == execExit {
		topic = "/tasks/exit"
	}
	p.Publish(topic, testEvent(kind, id))
}

// eventID reads back testEvent's id: a TaskExit's Id, and otherwise the
// container id, which every other task event carries as field 1, so any of
// them decodes as a TaskOOM.
func eventID(t *testing.T, env *eventsapi.Envelope) string {
	t.Helper()
	if env.Topic == "/tasks/exit" {
		var e events.TaskExit
		if err := proto.Unmarshal(env.Event.Value, &e); err != nil {
			t.Fatalf("unmarshal %s: %v", env.Topic, err)
		}
		return e.Id
	}
	var e events.TaskOOM
	if err := proto.Unmarshal(env.Event.Value, &e); err != nil {
		t.Fatalf("unmarshal %s: %v", env.Topic, err)
	}
	return e.ContainerId
}

// queuedIDs returns the ids of the live events in p's queue, oldest first,
// and checks the queue's bookkeeping on the way.
func queuedIDs(t *testing.T, p *Publisher) []string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	checkQueue(t, &p.eventQueue)
	var ids []string
	for _, e := range p.queue {
		if e.Envelope != nil {
			ids = append(ids, eventID(t, e.Envelope))
		}
	}
	return ids
}

// TestPublisherDropOldest checks which events a full queue drops, on a
// Publisher that never runs, so nothing is delivered.
func TestPublisherDropOldest(t *testing.T) {
	const exec, exit, xexit = "/tasks/exec-added", "/tasks/exit", execExit
	type ev struct{ kind, id string }
	for _, tc := range []struct {
		name        string
		limit       int // droppable events
		execLimit   int // exec exits
		publish     []ev
		want        []string
		wantDropped uint64
	}{
		{"under the limit", 3, 3, []ev{{exec, "a"}, {exit, "x"}, {exec, "b"}, {xexit, "y"}, {exec, "c"}}, []string{"a", "x", "b", "y", "c"}, 0},
		{"oldest after the head", 2, 9, []ev{{exec, "a"}, {exec, "b"}, {exit, "x"}, {exec, "c"}}, []string{"a", "x", "c"}, 1},
		{"the head is never dropped", 1, 9, []ev{{exec, "a"}, {exec, "b"}, {exec, "c"}}, []string{"a"}, 2},
		{"an exec exit at the head is never dropped", 9, 1, []ev{{xexit, "a"}, {xexit, "b"}, {xexit, "c"}}, []string{"a"}, 2},
		{"kept events are never dropped", 2, 9, []ev{{exit, "x"}, {exec, "a"}, {exit, "y"}, {exec, "b"}, {"/tasks/start", "s"}, {exec, "c"}, {"/tasks/paused", "d"}},
			[]string{"x", "y", "s", "c", "d"}, 2},
		{"many drops compact", 2, 9, []ev{{exit, "x"}, {exec, "1"}, {exec, "2"}, {exec, "3"}, {exit, "y"}, {exec, "4"}, {exec, "5"}, {exec, "6"}, {exec, "7"}},
			[]string{"x", "y", "6", "7"}, 5},
		{"oldest exec exit after the head", 9, 2, []ev{{"/tasks/oom", "o"}, {xexit, "a"}, {exec, "e"}, {xexit, "b"}, {exit, "x"}, {xexit, "c"}},
			[]string{"o", "e", "b", "x", "c"}, 1},
		{"each tier is bounded on its own", 1, 2,
			[]ev{{exit, "x"}, {exec, "1"}, {xexit, "a"}, {exec, "2"}, {xexit, "b"}, {"/tasks/oom", "o"}, {xexit, "c"}, {exec, "3"}, {xexit, "d"}, {exit, "y"}},
			[]string{"x", "o", "c", "3", "d", "y"}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPublisher(nil, "ns", slog.New(slog.DiscardHandler))
			p.tiers[tierDroppable].limit = tc.limit
			p.tiers[tierExecExit].limit = tc.execLimit
			for _, e := range tc.publish {
				publishTest(p, e.kind, e.id)
				queuedIDs(t, p) // checks the bookkeeping after every step
			}
			if got := queuedIDs(t, p); !slices.Equal(got, tc.want) {
				t.Errorf("queued %v, want %v", got, tc.want)
			}
			if got := dropped(p); got != tc.wantDropped {
				t.Errorf("Dropped() = %d, want %d", got, tc.wantDropped)
			}
		})
	}
}

// awaySender fails every Send, as if containerd were unreachable, until
// back is closed; then it records what it delivers.
type awaySender struct {
	back     chan struct{}
	tried    chan struct{} // closed at the first attempt
	tryOnce  sync.Once
	mu       sync.Mutex
	received []*eventsapi.Envelope
}

func (a *awaySender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	a.tryOnce.Do(func() { close(a.tried) })
	select {
	case <-a.back:
	default:
		return errors.New("containerd away")
	}
	a.mu.Lock()
	a.received = append(a.received, env)
	a.mu.Unlock()
	return nil
}

// lockedBuffer is a log destination safe to read while Run writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPublisherBoundedWhileAway is issue 6: a health probe's execs while
// containerd is away, each with its exec-added, exec-started and exit, and
// now and then a container's OOM and init exit. The queue stays bounded;
// every OOM and init exit is delivered once and in order, with the newest
// droppable events and the newest exec exits; Flush returns; the drained
// queue holds no memory.
func TestPublisherBoundedWhileAway(t *testing.T) {
	const execs, inits = 10000, 20
	logs := &lockedBuffer{}
	a := &awaySender{back: make(chan struct{}), tried: make(chan struct{})}
	p := NewPublisher(a, "ns", slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(t.Context())
	var runErr error
	done := make(chan struct{})
	go func() { defer close(done); runErr = p.Run(ctx) }() // joined below, or by the cleanup
	t.Cleanup(func() { cancel(); <-done })

	var published, droppable, exits []string
	kept := 0
	publish := func(kind, id string) {
		publishTest(p, kind, id)
		published = append(published, id)
		switch kind {
		case execExit:
			exits = append(exits, id)
		case "/tasks/exec-added", "/tasks/exec-started":
			droppable = append(droppable, id)
		default:
			kept++
		}
	}
	for i := range execs {
		publish("/tasks/exec-added", fmt.Sprint("a", i))
		if i == 0 {
			<-a.tried // Run is retrying the first event from now on
		}
		publish("/tasks/exec-started", fmt.Sprint("s", i))
		publish(execExit, fmt.Sprint("x", i))
		if i%(execs/inits) == execs/inits-1 {
			n := i / (execs / inits)
			publish("/tasks/oom", fmt.Sprint("o", n))
			publish("/tasks/exit", fmt.Sprint("i", n))
		}
		p.mu.Lock()
		live, size := p.live(), len(p.queue)
		p.mu.Unlock()
		if bound := maxDroppable + maxExecExits + kept; live > bound || size > 2*bound+1 {
			t.Fatalf("after %d execs: %d events queued in %d slots, want at most %d", i+1, live, size, bound)
		}
	}
	wantDropped := len(droppable) - maxDroppable + len(exits) - maxExecExits
	if got := dropped(p); got != uint64(wantDropped) {
		t.Fatalf("Dropped() = %d, want %d", got, wantDropped)
	}

	close(a.back)
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	p.Close()
	<-done
	if runErr != nil {
		t.Fatalf("Run = %v", runErr)
	}

	// What arrived, each once and in publish order: every OOM and init
	// exit; the first exec-added (in flight when the queue filled up) and
	// the newest maxDroppable-1 droppable events; the newest maxExecExits
	// exec exits.
	var got []string
	for _, env := range a.received {
		got = append(got, eventID(t, env))
	}
	survivors := map[string]bool{droppable[0]: true}
	for _, id := range droppable[len(droppable)-(maxDroppable-1):] {
		survivors[id] = true
	}
	for _, id := range exits[len(exits)-maxExecExits:] {
		survivors[id] = true
	}
	var want []string
	for _, id := range published {
		if id[0] == 'o' || id[0] == 'i' || survivors[id] {
			want = append(want, id)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}

	p.mu.Lock()
	size, holes, live := cap(p.queue), p.holes, p.live()
	for tr, b := range p.tiers {
		if b.live != 0 || b.next != 1 {
			t.Errorf("drained queue: tier %s has %d live, cursor %d; want 0 and 1", tier(tr), b.live, b.next)
		}
	}
	p.mu.Unlock()
	if size != 0 || holes != 0 || live != 0 {
		t.Errorf("drained queue keeps cap %d, %d holes, %d live; want none", size, holes, live)
	}
	out := logs.String()
	for _, tr := range []string{"droppable", `"exec exit"`} {
		if n := strings.Count(out, "event queue full"); n != 2 || !strings.Contains(out, "tier="+tr) {
			t.Errorf("want one 'queue full' line for tier %s, %d in all:\n%s", tr, n, out)
		}
	}
	wantLog := fmt.Sprintf("dropped=%d dropped_exec_exits=%d", wantDropped, len(exits)-maxExecExits)
	if n := strings.Count(out, "event queue drained"); n != 1 || !strings.Contains(out, wantLog) {
		t.Errorf("want one 'queue drained' line with %s:\n%s", wantLog, out)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPublisherFlushIgnoresLaterDrops checks that drops do not let a Flush
// return before an older kept event is delivered, as a count of events gone
// would when the events dropped are newer than the Flush.
func TestPublisherFlushIgnoresLaterDrops(t *testing.T) {
	g := &gateSender{allow: make(chan struct{})}
	p := NewPublisher(g, "ns", slog.New(slog.DiscardHandler))
	p.tiers[tierDroppable].limit = 1
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }() // joined by the cleanup
	t.Cleanup(func() { cancel(); <-done })

	p.Publish("/tasks/exit", testEvent("/tasks/exit", "x"))
	short, cancelShort := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancelShort()
	fctx := &waitingCtx{Context: short, waiting: make(chan struct{})}
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(fctx) }() // joined below
	<-fctx.waiting                           // Flush has taken its target: the exit
	for i := range 4 {
		p.Publish("/tasks/exec-added", testEvent("/tasks/exec-added", fmt.Sprint("e", i)))
	}
	if dropped(p) != 3 {
		t.Fatalf("Dropped() = %d, want 3", dropped(p))
	}
	if err := <-flushed; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with the exit undelivered = %v, want DeadlineExceeded", err)
	}
	g.allow <- struct{}{} // the exit
	g.allow <- struct{}{} // e3, the one exec left
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.topics, []string{"/tasks/exit", "/tasks/exec-added"}) {
		t.Fatalf("delivered %v, want the exit and one exec", g.topics)
	}
}

// dropped returns how many events p has dropped because their tier held too
// many events while containerd was away (droppable events and exec exits).
// Events published after Close or left over when Run's ctx ends are logged
// but not counted.
func dropped(p *Publisher) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}
