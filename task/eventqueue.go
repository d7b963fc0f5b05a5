package task

import (
	"github.com/gogo/protobuf/proto"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
)

// maxDroppable bounds the droppable events (tierDroppable) that may wait in
// the queue: 1024 envelopes of a few hundred bytes, well under a megabyte.
const maxDroppable = 1024

// maxExecExits bounds the exec exits (tierExecExit) that may wait in the
// queue. An exec's TaskExit with CRI's 64-character ids takes about 350
// bytes, so 4096 of them are about 1.5 MB. That holds every exec exit of an
// hour-long outage with a probe exec a second, or of eleven hours at
// Kubernetes' default probe period (10s); a containerd restart takes seconds.
const maxExecExits = 4096

// tier says how many events like this one may wait in the queue while
// containerd is away (see Publisher).
type tier uint8

const (
	tierKept      tier = iota // never dropped
	tierExecExit              // an exec's TaskExit: at most maxExecExits wait
	tierDroppable             // any other topic: at most maxDroppable wait
	numTiers
)

func (t tier) String() string {
	switch t {
	case tierKept:
		return "kept"
	case tierExecExit:
		return "exec exit"
	case tierDroppable:
		return "droppable"
	}
	return "unknown"
}

// tierOf returns the tier of ev, published on topic. A TaskExit is the
// init's when its Id is the container id (or empty, as containerd reads an
// empty exec id), and an exec's otherwise.
func tierOf(topic string, ev proto.Message) tier {
	switch topic {
	case "/tasks/exit":
		if x, ok := ev.(*events.TaskExit); ok && x.Id != "" && x.Id != x.ContainerId {
			return tierExecExit
		}
		return tierKept
	case "/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/delete":
		return tierKept
	}
	return tierDroppable
}

// eventQueue holds Publisher's events in publish order and bounds each tier.
// It is not safe for concurrent use: Publisher.mu guards it.
//
// queue[0], if any, is live: it is the event Run sends, and it is never
// dropped. A drop blanks its entry (a hole) instead of moving the rest of the
// queue; the holes are squeezed out when they are half the slice. Each tier
// keeps a cursor where the search for its oldest live event resumes, so an
// entry is looked at once per tier and push is O(1) amortised.
type eventQueue struct {
	queue []pending // oldest first
	holes int       // dropped entries still in queue
	tiers [numTiers]bound
}

// bound is one tier's share of the queue.
type bound struct {
	limit int // most live events of the tier; 0 means no limit
	live  int // live events of the tier in queue
	next  int // >= 1; queue[1:next] holds no live event of the tier
}

// pending is a queued event. The envelope is embedded so that the queue
// reads as a list of envelopes; a nil Envelope is a hole left by a drop.
type pending struct {
	*eventsapi.Envelope
	seq  uint64 // position in publish order, for Flush
	tier tier
}

func newEventQueue() eventQueue {
	q := eventQueue{}
	q.tiers[tierExecExit].limit = maxExecExits
	q.tiers[tierDroppable].limit = maxDroppable
	for t := range q.tiers {
		q.tiers[t].next = 1
	}
	return q
}

// live returns the number of live events.
func (q *eventQueue) live() int { return len(q.queue) - q.holes }

// head returns the oldest event, the one Run sends; ok is false when the
// queue is empty.
func (q *eventQueue) head() (e pending, ok bool) {
	if len(q.queue) == 0 {
		return pending{}, false
	}
	return q.queue[0], true
}

// push queues env as event seq of tier t and, if that makes one event of t
// too many, drops the oldest one after queue[0]. It returns the dropped
// event's topic, or "" if none was dropped.
func (q *eventQueue) push(env *eventsapi.Envelope, seq uint64, t tier) (dropped string) {
	q.queue = append(q.queue, pending{Envelope: env, seq: seq, tier: t})
	b := &q.tiers[t]
	b.live++
	if b.limit == 0 || b.live <= b.limit {
		return ""
	}
	return q.dropOldest(t)
}

// dropOldest drops the oldest live event of tier t after queue[0] and
// returns its topic, or "" if there is none (the only one is in flight).
// The search starts at the tier's cursor, where the last one stopped.
func (q *eventQueue) dropOldest(t tier) string {
	b := &q.tiers[t]
	i := b.next
	for i < len(q.queue) && (q.queue[i].Envelope == nil || q.queue[i].tier != t) {
		i++
	}
	b.next = i
	if i == len(q.queue) {
		return ""
	}
	topic := q.queue[i].Topic
	q.queue[i].Envelope = nil // the hole releases the envelope now
	b.next = i + 1
	b.live--
	q.holes++
	if 2*q.holes > len(q.queue) {
		q.compact()
	}
	return topic
}

// compact squeezes the holes out of queue in place. queue[0] is live, so it
// stays where Run expects it. A cursor moves to where its entry moves: the
// number of live entries before it.
func (q *eventQueue) compact() {
	var next [numTiers]int
	n := 0
	for i, e := range q.queue {
		for t := range q.tiers {
			if q.tiers[t].next == i {
				next[t] = n
			}
		}
		if e.Envelope != nil {
			q.queue[n] = e
			n++
		}
	}
	for t := range q.tiers {
		if q.tiers[t].next >= len(q.queue) {
			next[t] = n
		}
		q.tiers[t].next = max(next[t], 1)
	}
	clear(q.queue[n:])
	q.queue = q.queue[:n]
	q.holes = 0
}

// pop removes queue[0], which Run has delivered, and the holes behind it,
// so that queue[0] is live again. An empty queue lets go of its array.
func (q *eventQueue) pop() {
	q.tiers[q.queue[0].tier].live--
	q.shift()
	for len(q.queue) > 0 && q.queue[0].Envelope == nil {
		q.shift()
		q.holes--
	}
	if len(q.queue) == 0 {
		// queue[1:] keeps the whole array alive: after an outage it may
		// hold thousands of slots. Start again from nothing.
		q.queue = nil
		for t := range q.tiers {
			q.tiers[t].next = 1
		}
	}
}

// shift removes queue[0] and moves the cursors with the entries.
func (q *eventQueue) shift() {
	q.queue[0] = pending{}
	q.queue = q.queue[1:]
	for t := range q.tiers {
		q.tiers[t].next = max(q.tiers[t].next-1, 1)
	}
}
