package task

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/eventsapi"
)

// Events queues task events for containerd. A Service calls Publish while it
// holds a container's lock, so that the queue order is the decision order:
// Publish must never block. *Publisher implements it.
type Events interface {
	Publish(topic string, ev proto.Message)
}

// Sender delivers one event envelope to containerd. Only Publisher.Run calls
// it, one call at a time; an error leaves the event queued for a retry. If a
// Sender is also an io.Closer, Run closes it when it returns.
type Sender interface {
	Send(ctx context.Context, env *eventsapi.Envelope) error
}

// maxDroppable bounds the droppable events (see Publisher) that may wait in
// the queue: 1024 envelopes of a few hundred bytes, well under a megabyte.
const maxDroppable = 1024

// Publisher forwards task events to containerd in the order they were
// published, through a Sender: by default containerd's events service
// (containerd.services.events.ttrpc.v1.Events/Forward). Publish never
// blocks: events wait in an in-memory queue that one goroutine (Run) drains.
// While containerd is away Run retries the oldest event with a growing delay.
//
// What is kept. Events that tell containerd about the init's lifecycle or a
// process's end are never dropped: /tasks/create, /tasks/start, /tasks/exit,
// /tasks/oom and /tasks/delete. Create, start and delete come once per
// container and exit once per process, and containerd's view of a task is
// wrong without them (an exit with no start, a task that never goes away).
// Exec exits are kept too, so during an outage the queue still grows by one
// TaskExit per exec (a probe exec a second adds one or two megabytes an hour),
// a third of what it would otherwise.
//
// What may be dropped. Every other topic (/tasks/exec-added,
// /tasks/exec-started, /tasks/paused, /tasks/resumed, /tasks/checkpointed,
// and any topic not listed above) reports a state that a later event or a
// State rpc supersedes. At most maxDroppable (1024) of them wait in the
// queue; one more drops the oldest droppable event still queued, as the
// newest are the most useful. The event Run is sending or retrying is never
// dropped. Nothing is reordered: a dropped event just disappears from the
// sequence. Dropped counts them; the first drop of an outage is logged, and
// so is the total when the queue next drains.
//
// None twice, none lost. An event leaves the queue only once containerd has
// accepted it (Send returned nil), or when dropped as above, which never
// happens to the event in flight. One duplicate window remains: if Forward
// fails (say, its timeout fires) after containerd processed the event, the
// retry delivers it again.
//
// Cost. Publish is O(1) amortised. A drop blanks the entry in place (a hole)
// instead of moving the rest of the queue; the search for the oldest
// droppable event resumes where the last one stopped, so each entry is looked
// at once; the holes are squeezed out when they are half the slice, and the
// slice is released when the queue drains, so an outage leaves no large array
// behind. Publisher starts no goroutine or timer of its own.
type Publisher struct {
	send  Sender
	ns    string
	log   *slog.Logger
	limit int // maxDroppable; tests lower it before the first Publish

	mu         sync.Mutex // guards the fields below; taken after a container's mu
	queue      []pending  // oldest first; queue[0], if any, is live and is the event Run sends
	holes      int        // dropped entries still in queue
	droppable  int        // live droppable entries in queue
	next       int        // >= 1; queue[1:next] holds no live droppable entry
	closed     bool
	ended      bool          // Run has returned
	queued     uint64        // events ever queued; the seq of the next one
	dropped    uint64        // events ever dropped because the queue was full
	outageDrop uint64        // events dropped since the queue was last empty
	progress   chan struct{} // closed and replaced whenever queue[0] changes or Run ends
	wake       chan struct{} // buffer 1: the queue grew or closed
}

// pending is a queued event. The envelope is embedded so that the queue
// reads as a list of envelopes; a nil Envelope is a hole left by a drop.
type pending struct {
	*eventsapi.Envelope
	seq  uint64 // position in publish order, for Flush
	keep bool   // never dropped
}

// kept reports whether Publisher never drops events on topic (see Publisher).
func kept(topic string) bool {
	switch topic {
	case "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/oom", "/tasks/delete":
		return true
	}
	return false
}

var _ Events = (*Publisher)(nil)

// NewPublisher returns a Publisher for the events service at addr (a socket
// path; a unix:// prefix is accepted). Run must be started for events to
// leave the shim.
func NewPublisher(addr, ns string, log *slog.Logger) *Publisher {
	return NewPublisherWith(TTRPCSender(addr), ns, log)
}

// NewPublisherWith returns a Publisher that delivers events through s.
func NewPublisherWith(s Sender, ns string, log *slog.Logger) *Publisher {
	return &Publisher{
		send: s, ns: ns, log: log, limit: maxDroppable, next: 1,
		wake: make(chan struct{}, 1), progress: make(chan struct{}),
	}
}

// Publish queues ev under topic, stamped with the current time. It never
// blocks, so callers may hold their own lock to fix the order of events.
// Events published after Close are dropped and logged.
func (p *Publisher) Publish(topic string, ev proto.Message) {
	payload, err := marshalAny(ev)
	if err != nil {
		p.log.Error("marshal event", "topic", topic, "error", err)
		return
	}
	ts, _ := gogotypes.TimestampProto(time.Now())
	env := &eventsapi.Envelope{Timestamp: ts, Namespace: p.ns, Topic: topic, Event: payload}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.log.Error("event after close dropped", "topic", topic)
		return
	}
	first := p.pushLocked(env)
	p.mu.Unlock()
	p.signal()
	if first != "" {
		p.log.Warn("event queue full while containerd is unreachable: dropping oldest droppable events",
			"limit", p.limit, "topic", first)
	}
}

// pushLocked queues env and, if that makes one droppable event too many,
// drops the oldest. It returns the dropped event's topic if this is the first
// drop since the queue was last empty, for the caller to log.
func (p *Publisher) pushLocked(env *eventsapi.Envelope) (firstDrop string) {
	keep := kept(env.Topic)
	p.queue = append(p.queue, pending{Envelope: env, seq: p.queued, keep: keep})
	p.queued++
	if keep {
		return ""
	}
	p.droppable++
	if p.droppable <= p.limit {
		return ""
	}
	topic := p.dropOldestLocked()
	if topic == "" || p.outageDrop != 1 {
		return ""
	}
	return topic
}

// dropOldestLocked drops the oldest live droppable event after queue[0] and
// returns its topic, or "" if there is none (the only one is in flight).
// The search starts at p.next, where the last one stopped: everything before
// it is kept, a hole, or queue[0].
func (p *Publisher) dropOldestLocked() string {
	i := p.next
	for i < len(p.queue) && (p.queue[i].Envelope == nil || p.queue[i].keep) {
		i++
	}
	p.next = i
	if i == len(p.queue) {
		return ""
	}
	topic := p.queue[i].Topic
	p.queue[i].Envelope = nil // the hole releases the envelope now
	p.next = i + 1
	p.holes++
	p.droppable--
	p.dropped++
	p.outageDrop++
	if 2*p.holes > len(p.queue) {
		p.compactLocked()
	}
	return topic
}

// compactLocked squeezes the holes out of queue in place. queue[0] is live,
// so it stays where Run expects it.
func (p *Publisher) compactLocked() {
	n, next := 0, 0
	for i, e := range p.queue {
		if i == p.next {
			next = n
		}
		if e.Envelope != nil {
			p.queue[n] = e
			n++
		}
	}
	if p.next >= len(p.queue) {
		next = n
	}
	clear(p.queue[n:])
	p.queue = p.queue[:n]
	p.holes = 0
	p.next = max(next, 1)
}

// popLocked removes queue[0], which Run has delivered, and the holes behind
// it, so that queue[0] is live again. An empty queue lets go of its array.
func (p *Publisher) popLocked() {
	if !p.queue[0].keep {
		p.droppable--
	}
	p.queue[0] = pending{}
	p.queue = p.queue[1:]
	p.next = max(p.next-1, 1)
	for len(p.queue) > 0 && p.queue[0].Envelope == nil {
		p.queue = p.queue[1:]
		p.holes--
		p.next = max(p.next-1, 1)
	}
	if len(p.queue) == 0 {
		// queue[1:] keeps the whole array alive: after an outage it may
		// hold thousands of slots. Start again from nothing.
		p.queue = nil
		p.next = 1
	}
	close(p.progress)
	p.progress = make(chan struct{})
}

// Dropped returns how many events have been dropped because the queue held
// too many droppable events while containerd was away (see Publisher).
// Events published after Close or left over when Run's ctx ends are logged
// but not counted here.
func (p *Publisher) Dropped() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Close stops accepting events. Run delivers what is queued, then returns.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.signal()
}

func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run delivers events until Close has been called and the queue is empty, or
// ctx ends (what is left is logged as lost). The caller owns the goroutine.
func (p *Publisher) Run(ctx context.Context) error {
	if c, ok := p.send.(io.Closer); ok {
		defer func() { _ = c.Close() }() // a connection or the like; nothing left to flush
	}
	defer p.end() // wake every Flush: nothing more will be delivered
	failures := 0
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			select {
			case <-p.wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// queue[0] is never dropped, so it is still env when Send returns.
		env := p.queue[0].Envelope
		p.mu.Unlock()

		err := p.send.Send(ctx, env)
		if err == nil {
			failures = 0
			p.delivered()
			continue
		}
		failures++
		p.log.Warn("forward event", "topic", env.Topic, "attempt", failures, "error", err)
		if err := sleep(ctx, backoff(failures)); err != nil {
			p.lost()
			return err
		}
	}
}

// delivered removes the event Run has delivered and, if that drained a
// queue that dropped events, logs how many.
func (p *Publisher) delivered() {
	p.mu.Lock()
	p.popLocked()
	var drops, total uint64
	if len(p.queue) == 0 && p.outageDrop > 0 {
		drops, total = p.outageDrop, p.dropped
		p.outageDrop = 0
	}
	p.mu.Unlock()
	if drops > 0 {
		p.log.Warn("event queue drained", "dropped", drops, "dropped_total", total)
	}
}

// end marks Run as returned and wakes every Flush.
func (p *Publisher) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	close(p.progress)
	p.progress = make(chan struct{})
}

// Flush blocks until every event published before the call has been
// delivered or dropped, Run has ended, or ctx ends (then it returns ctx's
// error).
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	target := p.queued
	// Wait until the oldest live event was published after the call. Drops
	// never touch queue[0], so only a delivery (or Run's end) can end this.
	for !p.ended && len(p.queue) > 0 && p.queue[0].seq < target {
		ch := p.progress
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
	p.mu.Unlock()
	return nil
}

func (p *Publisher) lost() {
	p.mu.Lock()
	n := len(p.queue) - p.holes
	p.mu.Unlock()
	if n > 0 {
		p.log.Error("events not delivered before exit", "count", n)
	}
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

// marshalAny wraps a message in an Any whose type URL is its bare proto name,
// as containerd's typeurl does (never type.googleapis.com/...).
func marshalAny(m proto.Message) (*gogotypes.Any, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &gogotypes.Any{TypeUrl: proto.MessageName(m), Value: b}, nil
}

// TTRPCSender returns the Sender of a v2 shim: containerd's ttrpc events
// service at addr (a socket path; a unix:// prefix is accepted).
func TTRPCSender(addr string) Sender {
	return &ttrpcSender{addr: strings.TrimPrefix(addr, "unix://")}
}
