package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// lifecyclePhase times `ctr run --rm … /bin/true`, alternating the shims
// sample by sample.
func (b *bench) lifecyclePhase(ctx context.Context) error {
	var samples [2][]time.Duration
	for i := range b.cfg.lifecycleN {
		for _, s := range b.order(i) {
			d, err := b.d.timed(ctx, b.runArgs(s, []string{"--rm"}, b.newID("life", s), "/bin/true")...)
			if err != nil {
				return err
			}
			k := b.index(s)
			samples[k] = append(samples[k], d)
		}
	}
	lean, runc := millis(samples[0]), millis(samples[1])
	b.res.add("lifecycle `ctr run --rm … /bin/true`", "ms", 1, median(lean), median(runc), maxRatio(0.95))
	b.res.add("lifecycle, p99", "ms", 1, percentile(lean, 99), percentile(runc, 99))
	return nil
}

// execPhase times `ctr task exec … /bin/true`: one at a time, alternating
// the shims exec by exec; then execConc at once, alternating by round.
func (b *bench) execPhase(ctx context.Context) (retErr error) {
	var ids [2]string
	defer func() { retErr = errors.Join(retErr, b.removeAll(ctx, ids[:])) }()
	for k, s := range b.shims {
		id := b.newID("exec", s)
		if _, err := b.d.ctr(ctx, b.runArgs(s, []string{"-d"}, id, sleeper...)...); err != nil {
			return err
		}
		ids[k] = id
	}
	if err := b.ctrFloor(ctx); err != nil {
		return err
	}
	if err := b.execSequential(ctx, ids); err != nil {
		return err
	}
	return b.execBursts(ctx, ids)
}

// execSequential times execs one at a time, alternating the shims.
func (b *bench) execSequential(ctx context.Context, ids [2]string) error {
	var seq [2][]time.Duration
	tr, err := b.startTrace(ctx, ids[0])
	if err != nil {
		return err
	}
	for i := range b.cfg.execN {
		for _, s := range b.order(i) {
			k := b.index(s)
			d, err := b.exec(ctx, ids[k])
			if err != nil {
				return err
			}
			seq[k] = append(seq[k], d)
		}
	}
	lean, runc := millis(seq[0]), millis(seq[1])
	b.res.add("exec `ctr task exec … /bin/true`, one at a time", "ms", 1, median(lean), median(runc), maxRatio(0.9))
	b.res.add("exec, one at a time, p99", "ms", 1, percentile(lean, 99), percentile(runc, 99))
	return b.stopTrace(tr, b.cfg.execN)
}

// execBursts times execConc execs at once, one shim per round.
func (b *bench) execBursts(ctx context.Context, ids [2]string) error {
	var walls, each [2][]time.Duration
	for r := range b.cfg.rounds {
		for _, s := range b.order(r) {
			k := b.index(s)
			wall, lat, err := b.execBurst(ctx, ids[k], b.cfg.execConc)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label, err)
			}
			walls[k] = append(walls[k], wall)
			each[k] = append(each[k], lat...)
			b.logf("exec burst %s: %d at once in %s", s.label, b.cfg.execConc, wall.Round(time.Millisecond))
		}
	}
	n := b.cfg.execConc
	b.res.add(fmt.Sprintf("exec, %d at once: wall time", n), "ms", 0, median(millis(walls[0])), median(millis(walls[1])),
		maxRatio(0.8))
	b.res.add(fmt.Sprintf("exec, %d at once: per exec", n), "ms", 0, median(millis(each[0])), median(millis(each[1])))
	b.res.add(fmt.Sprintf("exec, %d at once: per exec p99", n), "ms", 0,
		percentile(millis(each[0]), 99), percentile(millis(each[1]), 99))
	return nil
}

// ctrFloor notes how long a ctr call takes that involves no shim: the part
// of every latency above that no shim can remove.
func (b *bench) ctrFloor(ctx context.Context) error {
	var samples []time.Duration
	for range b.cfg.execN {
		d, err := b.d.timed(ctx, "version")
		if err != nil {
			return err
		}
		samples = append(samples, d)
	}
	b.res.note(fmt.Sprintf("`ctr version` (containerd only, no shim) takes %.1f ms (median of %d): "+
		"every ctr latency above includes about this much that no shim can remove.",
		median(millis(samples)), len(samples)))
	return nil
}

// execBurst starts n execs in container id at once and returns the time
// until the last one finished and each one's latency.
func (b *bench) execBurst(ctx context.Context, id string, n int) (time.Duration, []time.Duration, error) {
	lat := make([]time.Duration, n)
	start := time.Now()
	err := parallel(n, func(i int) error {
		var err error
		lat[i], err = b.exec(ctx, id)
		return err
	})
	return time.Since(start), lat, err
}

// execMany runs n execs in container id, conc at a time, counting failures
// in failed and returning the first error.
func (b *bench) execMany(ctx context.Context, id string, n, conc int, failed *atomic.Int64) error {
	var next atomic.Int64
	var mu sync.Mutex // guards first
	var first error
	_ = parallel(conc, func(int) error {
		for next.Add(1) <= int64(n) && ctx.Err() == nil {
			if _, err := b.exec(ctx, id); err != nil {
				failed.Add(1)
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		}
		return nil
	})
	return first
}

// exec runs /bin/true in container id with a fresh exec id.
func (b *bench) exec(ctx context.Context, id string) (time.Duration, error) {
	eid := fmt.Sprintf("e%d", b.ids.Add(1))
	return b.d.timed(ctx, "task", "exec", "--fifo-dir", b.d.fifoDir, "--exec-id", eid, id, "/bin/true")
}

// burstPhase starts startConc containers of one shim at once and then
// tears them all down at once, alternating the shims by round.
func (b *bench) burstPhase(ctx context.Context) error {
	var starts, stops [2][]time.Duration
	for r := range b.cfg.rounds {
		for _, s := range b.order(r) {
			start, stop, err := b.burstRound(ctx, s)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label, err)
			}
			k := b.index(s)
			starts[k], stops[k] = append(starts[k], start), append(stops[k], stop)
			b.logf("start burst %s: %d started in %s, removed in %s", s.label, b.cfg.startConc,
				start.Round(time.Millisecond), stop.Round(time.Millisecond))
		}
	}
	n := b.cfg.startConc
	b.res.add(fmt.Sprintf("start %d containers at once (`ctr run -d`): wall time", n), "s", 2,
		median(millis(starts[0]))/1000, median(millis(starts[1]))/1000)
	b.res.add(fmt.Sprintf("tear down %d at once (`task rm -f`, `container rm`): wall time", n), "s", 2,
		median(millis(stops[0]))/1000, median(millis(stops[1]))/1000)
	return nil
}

func (b *bench) burstRound(ctx context.Context, s shim) (start, stop time.Duration, err error) {
	ids := make([]string, b.cfg.startConc)
	for i := range ids {
		ids[i] = b.newID("burst", s)
	}
	t0 := time.Now()
	err = parallel(len(ids), func(i int) error {
		_, err := b.d.ctr(ctx, b.runArgs(s, []string{"-d"}, ids[i], sleeper...)...)
		return err
	})
	start = time.Since(t0)
	if err == nil {
		err = b.checkRunning(ctx, ids)
	}
	t1 := time.Now()
	rmErr := b.removeAll(ctx, ids)
	stop = time.Since(t1)
	reapShims()
	return start, stop, errors.Join(err, rmErr)
}

// checkRunning fails unless every container in ids has a running task.
func (b *bench) checkRunning(ctx context.Context, ids []string) error {
	tasks, err := b.d.taskPids(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, ok := tasks[id]; !ok {
			return fmt.Errorf("task %s is not running after ctr run -d returned", id)
		}
	}
	return nil
}
