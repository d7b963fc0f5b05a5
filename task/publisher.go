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

// Publisher forwards task events to containerd in the order they were
// published, through a Sender: by default containerd's events service
// (containerd.services.events.ttrpc.v1.Events/Forward). Publish never
// blocks: events wait in an in-memory queue that one goroutine (Run) drains.
// An event is removed only once containerd has accepted it; while containerd
// is away Run retries with a growing delay and keeps everything, so no exit
// is dropped after a fixed retry count.
type Publisher struct {
	send Sender
	ns   string
	log  *slog.Logger

	mu        sync.Mutex // guards queue, closed, queued, delivered, progress; taken after a container's mu
	queue     []*eventsapi.Envelope
	closed    bool
	queued    uint64        // events ever queued
	delivered uint64        // events ever delivered (or dropped at the end)
	progress  chan struct{} // closed and replaced whenever delivered grows or Run ends
	wake      chan struct{} // buffer 1: the queue grew or closed
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
	return &Publisher{send: s, ns: ns, log: log, wake: make(chan struct{}, 1), progress: make(chan struct{})}
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
	p.queue = append(p.queue, env)
	p.queued++
	p.mu.Unlock()
	p.signal()
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
	defer p.advance(0, true) // wake every Flush: nothing more will be delivered
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
		env := p.queue[0]
		p.mu.Unlock()

		err := p.send.Send(ctx, env)
		if err == nil {
			failures = 0
			p.mu.Lock()
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.mu.Unlock()
			p.advance(1, false)
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

// advance counts n more events delivered (all of them if end) and wakes
// every Flush waiting.
func (p *Publisher) advance(n uint64, end bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delivered += n
	if end {
		p.delivered = p.queued
	}
	close(p.progress)
	p.progress = make(chan struct{})
}

// Flush blocks until every event published before the call has been
// delivered, Run has ended, or ctx ends (then it returns ctx's error).
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	target := p.queued
	for p.delivered < target {
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
	n := len(p.queue)
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
