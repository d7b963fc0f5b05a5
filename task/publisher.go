package task

import (
	"context"
	"fmt"
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

// Publisher forwards task events to containerd's events service
// (containerd.services.events.ttrpc.v1.Events/Forward) in the order they
// were published. Publish never blocks: events wait in an in-memory queue
// that one goroutine (Run) drains. An event is removed only once containerd
// has accepted it; while containerd is away Run retries with a growing delay
// and keeps everything, so no exit is dropped after a fixed retry count.
type Publisher struct {
	addr string
	ns   string
	log  *slog.Logger

	mu     sync.Mutex // guards queue, closed; taken after a container's mu
	queue  []*eventsapi.Envelope
	closed bool
	wake   chan struct{} // buffer 1: the queue grew or closed
}

// NewPublisher returns a Publisher for the events service at addr (a socket
// path; a unix:// prefix is accepted). Run must be started for events to
// leave the shim.
func NewPublisher(addr, ns string, log *slog.Logger) *Publisher {
	return &Publisher{addr: strings.TrimPrefix(addr, "unix://"), ns: ns, log: log, wake: make(chan struct{}, 1)}
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
	var client *ttrpc.Client
	defer func() {
		if client != nil {
			_ = client.Close()
		}
	}()
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

		err := p.forward(ctx, &client, env)
		if err == nil {
			failures = 0
			p.mu.Lock()
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.mu.Unlock()
			continue
		}
		failures++
		p.log.Warn("forward event", "topic", env.Topic, "attempt", failures, "error", err)
		if client != nil {
			_ = client.Close()
			client = nil
		}
		if err := sleep(ctx, backoff(failures)); err != nil {
			p.lost()
			return err
		}
	}
}

func (p *Publisher) lost() {
	p.mu.Lock()
	n := len(p.queue)
	p.mu.Unlock()
	if n > 0 {
		p.log.Error("events not delivered before exit", "count", n)
	}
}

func (p *Publisher) forward(ctx context.Context, client **ttrpc.Client, env *eventsapi.Envelope) error {
	if *client == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		conn, err := d.DialContext(ctx, "unix", p.addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", p.addr, err)
		}
		*client = ttrpc.NewClient(conn)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := eventsapi.NewEventsClient(*client).Forward(fctx, &eventsapi.ForwardRequest{Envelope: env})
	return err
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
