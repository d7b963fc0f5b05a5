package task

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
)

// checkQueue checks q's bookkeeping: the head is live, the hole and live
// counts match the entries, and no live event of a tier is behind its cursor.
func checkQueue(t *testing.T, q *eventQueue) {
	t.Helper()
	holes := 0
	var live [numTiers]int
	for i, e := range q.queue {
		if e.Envelope == nil {
			holes++
			continue
		}
		live[e.tier]++
		if i > 0 && i < q.tiers[e.tier].next {
			t.Errorf("live %s event at %d, before its cursor %d", e.tier, i, q.tiers[e.tier].next)
		}
	}
	if len(q.queue) > 0 && q.queue[0].Envelope == nil {
		t.Error("the head is a hole")
	}
	if holes != q.holes {
		t.Errorf("holes %d, counted %d", q.holes, holes)
	}
	for tr, b := range q.tiers {
		if b.live != live[tr] || b.next < 1 {
			t.Errorf("tier %s: live %d cursor %d, counted %d live", tier(tr), b.live, b.next, live[tr])
		}
	}
}

func TestTierOf(t *testing.T) {
	for _, tc := range []struct {
		topic string
		ev    *events.TaskExit // nil: an event of another type
		want  tier
	}{
		{"/tasks/create", nil, tierKept},
		{"/tasks/start", nil, tierKept},
		{"/tasks/oom", nil, tierKept},
		{"/tasks/delete", nil, tierKept},
		{"/tasks/exit", &events.TaskExit{ContainerId: "c", Id: "c"}, tierKept},
		{"/tasks/exit", &events.TaskExit{ContainerId: "c"}, tierKept},
		{"/tasks/exit", &events.TaskExit{ContainerId: "c", Id: "probe-1"}, tierExecExit},
		{"/tasks/exec-added", nil, tierDroppable},
		{"/tasks/exec-started", nil, tierDroppable},
		{"/tasks/paused", nil, tierDroppable},
		{"/tasks/resumed", nil, tierDroppable},
		{"/tasks/checkpointed", nil, tierDroppable},
		{"/something/new", nil, tierDroppable},
	} {
		var ev = testEvent("/tasks/oom", "c")
		if tc.ev != nil {
			ev = tc.ev
		}
		if got := tierOf(tc.topic, ev); got != tc.want {
			t.Errorf("tierOf(%s, %v) = %s, want %s", tc.topic, ev, got, tc.want)
		}
	}
}

// TestEventQueueModel pushes and pops events of random tiers with small
// limits, and compares the queue with a plain slice that drops the slow way:
// through many compactions, the cursors must find the same oldest events.
func TestEventQueueModel(t *testing.T) {
	type ev struct {
		seq uint64
		t   tier
	}
	limits := [numTiers]int{0, 3, 5}
	rng := rand.New(rand.NewPCG(1, 2))
	q := newEventQueue()
	for tr := range q.tiers {
		q.tiers[tr].limit = limits[tr]
	}
	var model []ev
	var seq uint64
	for step := range 20000 {
		if len(model) > 0 && rng.IntN(4) == 0 {
			q.pop()
			model = model[1:]
		} else {
			tr := tier(rng.IntN(int(numTiers)))
			if tr == tierKept && rng.IntN(4) > 0 {
				tr = tierDroppable // few kept events, as in a shim
			}
			env := &eventsapi.Envelope{Topic: fmt.Sprint(seq)}
			dropped := q.push(env, seq, tr)
			model = append(model, ev{seq, tr})
			seq++
			want := ""
			if n := countTier(model, tr, func(e ev) tier { return e.t }); limits[tr] > 0 && n > limits[tr] {
				for i := 1; i < len(model); i++ {
					if model[i].t == tr {
						want = fmt.Sprint(model[i].seq)
						model = slices.Delete(model, i, i+1)
						break
					}
				}
			}
			if dropped != want {
				t.Fatalf("step %d: push dropped %q, want %q", step, dropped, want)
			}
		}
		checkQueue(t, &q)
		var got []ev
		for _, e := range q.queue {
			if e.Envelope != nil {
				got = append(got, ev{e.seq, e.tier})
			}
		}
		if !slices.Equal(got, model) {
			t.Fatalf("step %d: queue %v, want %v", step, got, model)
		}
		if len(q.queue) > 2*len(model)+1 {
			t.Fatalf("step %d: %d slots for %d events", step, len(q.queue), len(model))
		}
	}
}

func countTier[E any](s []E, t tier, of func(E) tier) int {
	n := 0
	for _, e := range s {
		if of(e) == t {
			n++
		}
	}
	return n
}
