package task

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

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

// Publisher forwards task events to containerd in the order they were
// published, through a Sender: by default containerd's events service
// (containerd.services.events.ttrpc.v1.Events/Forward). Publish never
// blocks: events wait in an in-memory queue that one goroutine (Run) drains.
// While containerd is away Run retries the oldest event with a growing delay.
//
// What is kept. Events wait in three tiers. Two are capped, so that however
// long containerd stays away, the queue grows with the shim's containers and
// their OOMs, not with time.
//
// Never dropped: /tasks/create, /tasks/start, /tasks/delete, /tasks/oom and
// the init's /tasks/exit (a TaskExit whose Id is its ContainerId, or empty).
// containerd's view of a task is wrong without them (an exit with no start,
// a task that never goes away). Create, start, delete and the init's exit
// come once per container; an OOM once per batch of OOM kills in the
// container's cgroup.
//
// Exec exits (a TaskExit whose Id is an exec id): at most maxExecExits (4096,
// about 1.5 MB) wait; one more drops the oldest exec exit still queued. A
// probe exec a second would otherwise grow the queue without bound. The
// oldest are the least useful: a containerd that restarted does not know the
// execs started before it, and a client learns an exec's exit from the Wait
// rpc, which the shim answers from the exec's own record (process.Exec.Wait)
// until the exec is deleted, whether or not the event got out.
//
// Everything else (/tasks/exec-added, /tasks/exec-started, /tasks/paused,
// /tasks/resumed, /tasks/checkpointed, and any topic not listed above)
// reports a state that a later event or a State rpc supersedes: at most
// maxDroppable (1024) wait; one more drops the oldest of them still queued,
// as the newest are the most useful.
//
// The event Run is sending or retrying is never dropped. Nothing is
// reordered: a dropped event just disappears from the sequence. The first
// drop of each tier in an outage is logged, and so is the count of drops when
// the queue next drains.
//
// None twice, none lost. An event leaves the queue only once containerd has
// accepted it (Send returned nil), or when dropped as above, which never
// happens to the event in flight, or when containerd has refused it for good
// maxRejections times in a row (a status such as InvalidArgument, never a
// connection error or a timeout): one such event must not hold back every
// event behind it forever; each is logged. One duplicate window remains: if
// Forward fails (say, its timeout fires) after containerd processed the
// event, the retry delivers it again.
//
// Cost. Publish is O(1) amortised, and the drained queue holds no memory
// (see eventQueue). Publisher starts no goroutine or timer of its own.
type Publisher struct {
	send Sender
	ns   string
	log  *slog.Logger

	mu          sync.Mutex // guards the fields below; taken after a container's mu
	eventQueue             // embedded: p.queue is the events in order; tests lower its limits before the first Publish
	closed      bool
	ended       bool             // Run has returned
	queued      uint64           // events ever queued; the seq of the next one
	dropped     uint64           // events ever dropped because their tier was full
	rejected    uint64           // events dropped because containerd refused them for good
	outageDrops [numTiers]uint64 // events dropped since the queue was last empty, by tier
	progress    chan struct{}    // closed and replaced whenever the head changes or Run ends
	wake        chan struct{}    // buffer 1: the queue grew or closed
}

var _ Events = (*Publisher)(nil)

// NewPublisher returns a Publisher that delivers events of namespace ns
// through s (TTRPCSender, or the legacy v1 shim's). Run must be started for
// events to leave the shim.
func NewPublisher(s Sender, ns string, log *slog.Logger) *Publisher {
	return &Publisher{
		send: s, ns: ns, log: log, eventQueue: newEventQueue(),
		wake: make(chan struct{}, 1), progress: make(chan struct{}),
	}
}

// Publish queues ev under topic, stamped with the current time. It never
// blocks, so callers may hold their own lock to fix the order of events.
// Events published after Close are dropped and logged.
func (p *Publisher) Publish(topic string, ev proto.Message) {
	t := tierOf(topic, ev)
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
	first := p.pushLocked(env, t)
	limit := p.tiers[t].limit
	p.mu.Unlock()
	p.signal()
	if first != "" {
		p.log.Warn("event queue full while containerd is unreachable: dropping the oldest events of a tier",
			"tier", t.String(), "limit", limit, "topic", first)
	}
}

// pushLocked queues env in tier t, which may drop the oldest event of t. It
// returns the dropped event's topic if this is the tier's first drop since
// the queue was last empty, for the caller to log.
func (p *Publisher) pushLocked(env *eventsapi.Envelope, t tier) (firstDrop string) {
	topic := p.push(env, p.queued, t)
	p.queued++
	if topic == "" {
		return ""
	}
	p.dropped++
	p.outageDrops[t]++
	if p.outageDrops[t] != 1 {
		return ""
	}
	return topic
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
	failures, rejections := 0, 0
	for {
		p.mu.Lock()
		head, ok := p.head()
		if !ok {
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
		// The head is never dropped, so it is still env when Send returns.
		env := head.Envelope
		p.mu.Unlock()

		err := p.send.Send(ctx, env)
		if err == nil {
			failures, rejections = 0, 0
			p.delivered()
			continue
		}
		failures++
		if rejections = nextRejections(rejections, err); rejections >= maxRejections {
			p.log.Error("event rejected by containerd for good: dropped", "topic", env.Topic, "attempts", failures, "error", err)
			failures, rejections = 0, 0
			p.reject()
			continue
		}
		p.log.Warn("forward event", "topic", env.Topic, "attempt", failures, "error", err)
		if err := sleep(ctx, backoff(failures)); err != nil {
			p.lost()
			return err
		}
	}
}

// reject removes the event containerd has refused for good, so the events
// behind it are not held forever, and counts it.
func (p *Publisher) reject() {
	p.mu.Lock()
	p.rejected++
	p.mu.Unlock()
	p.delivered()
}

// delivered removes the event Run has delivered (or dropped as rejected)
// and, if that drained a queue that dropped events, logs how many.
func (p *Publisher) delivered() {
	p.mu.Lock()
	p.pop()
	close(p.progress)
	p.progress = make(chan struct{})
	var drops [numTiers]uint64
	var total uint64
	if p.live() == 0 {
		drops, total = p.outageDrops, p.dropped
		p.outageDrops = [numTiers]uint64{}
	}
	p.mu.Unlock()
	if n := drops[tierExecExit] + drops[tierDroppable]; n > 0 {
		p.log.Warn("event queue drained", "dropped", n, "dropped_exec_exits", drops[tierExecExit],
			"dropped_total", total)
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
	// never touch the head, so only a delivery (or Run's end) can end this.
	for !p.ended {
		if head, ok := p.head(); !ok || head.seq >= target {
			break
		}
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
	n := p.live()
	p.mu.Unlock()
	if n > 0 {
		p.log.Error("events not delivered before exit", "count", n)
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
