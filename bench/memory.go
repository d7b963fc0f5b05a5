package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// sleeper is the argv of an idle container. busybox sleep as pid 1 ignores
// SIGTERM (ENVIRONMENT.md); the bench removes containers with SIGKILL.
var sleeper = []string{"/bin/sleep", "1000000"}

// groupAnnotation puts containers into one shim, for both shims alike.
const groupAnnotation = "io.containerd.runc.v2.group"

// idlePhase starts idleN sleeping containers per shim, interleaved, counts
// each shim's context switches over an idle window (both kinds idle in the
// same window), then reads each shim's memory and threads.
func (b *bench) idlePhase(ctx context.Context) (retErr error) {
	var ids [2][]string
	defer func() { retErr = errors.Join(retErr, b.removeAll(ctx, append(ids[0], ids[1]...))) }()
	for i := range b.cfg.idleN {
		for _, s := range b.order(i) {
			k := b.index(s)
			id := b.newID("idle", s)
			if _, err := b.d.ctr(ctx, b.runArgs(s, []string{"-d"}, id, sleeper...)...); err != nil {
				return err
			}
			ids[k] = append(ids[k], id)
		}
	}
	pids, err := b.shimPids(ctx, ids)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, b.cfg.settle); err != nil {
		return err
	}
	// Wake-ups first: memory and threads are then read from shims that
	// have been idle for settle+idle.
	if err := b.wakeups(ctx, pids); err != nil {
		return err
	}
	return b.idleMemory(pids)
}

// idleMemory reads the memory and threads of every shim in pids.
func (b *bench) idleMemory(pids [2][]int) error {
	syscall.Sync()
	var rss, pss, uss, threads [2][]float64
	for k := range pids {
		for _, pid := range pids[k] {
			m, err := readMem(pid)
			if err != nil {
				return err
			}
			n, err := readThreads(pid)
			if err != nil {
				return err
			}
			rss[k], pss[k], uss[k] = append(rss[k], m.rss/1024), append(pss[k], m.pss/1024), append(uss[k], m.uss/1024)
			threads[k] = append(threads[k], float64(n))
		}
	}
	n := b.cfg.idleN
	b.res.add(fmt.Sprintf("idle RSS per shim (%d containers each)", n), "MiB", 2, median(rss[0]), median(rss[1]))
	b.res.add(fmt.Sprintf("idle PSS per shim (%d containers each)", n), "MiB", 2, median(pss[0]), median(pss[1]),
		maxValue(1.5), maxRatio(0.5))
	b.res.add(fmt.Sprintf("idle USS per shim (%d containers each)", n), "MiB", 2, median(uss[0]), median(uss[1]),
		maxValue(1.2))
	b.res.add("idle USS, smallest to largest shim (spread)", "KiB", 0,
		(percentile(uss[0], 100)-percentile(uss[0], 0))*1024, (percentile(uss[1], 100)-percentile(uss[1], 0))*1024)
	b.res.note(fmt.Sprintf("idle USS per shim in KiB, leanshim: %s; runc-v2: %s", kibList(uss[0]), kibList(uss[1])))
	if debugSmaps {
		for i, pid := range pids[0] {
			if sm, err := readSmaps(pid); err == nil {
				fmt.Fprintf(os.Stderr, "idle shim %d: USS by area %v\n", pid, sm.uss)
			}
			if d, err := b.dumpGo(context.Background(), pid); err == nil {
				fmt.Fprintf(os.Stderr, "idle shim %d: USS %.0f KiB, num_gc %.0f heap_inuse %.0f heap_released %.0f gc_sys %.0f\n",
					pid, uss[0][i]*1024, d.stats["num_gc"], d.stats["heap_inuse"]/1024, d.stats["heap_released"]/1024, d.stats["gc_sys"]/1024)
			}
		}
	}
	b.res.add("idle OS threads per shim", "threads", 0, median(threads[0]), median(threads[1]), maxValue(5))
	b.res.add("idle OS threads, most in one shim", "threads", 0, percentile(threads[0], 100), percentile(threads[1], 100))
	return nil
}

// kibList formats MiB values as a sorted list of KiB.
func kibList(mib []float64) string {
	var out []string
	for _, v := range slices.Sorted(slices.Values(mib)) {
		out = append(out, fmt.Sprintf("%.0f", v*1024))
	}
	return strings.Join(out, " ")
}

// wakeups counts the context switches of every thread of every shim in
// pids over the idle window, per minute.
func (b *bench) wakeups(ctx context.Context, pids [2][]int) error {
	var before [2][]int64
	for k := range pids {
		for _, pid := range pids[k] {
			n, err := readSwitches(pid)
			if err != nil {
				return err
			}
			before[k] = append(before[k], n)
		}
	}
	start := time.Now()
	if err := sleepCtx(ctx, b.cfg.idle); err != nil {
		return err
	}
	perMinute := float64(time.Minute) / float64(time.Since(start))
	var rates [2][]float64
	for k := range pids {
		for i, pid := range pids[k] {
			n, err := readSwitches(pid)
			if err != nil {
				return err
			}
			rates[k] = append(rates[k], float64(n-before[k][i])*perMinute)
		}
	}
	b.res.add(fmt.Sprintf("idle wake-ups per shim (context switches over %s)", b.cfg.idle), "/min", 1,
		median(rates[0]), median(rates[1]), maxValue(0))
	b.res.add("idle wake-ups, busiest shim", "/min", 1, percentile(rates[0], 100), percentile(rates[1], 100))
	return nil
}

// groupPhase puts groupN containers into one shim per kind (the group
// annotation) and reports what each container after the first adds.
func (b *bench) groupPhase(ctx context.Context) error {
	var perExtra [2][3][]float64 // rss, pss, uss in KiB per extra container
	var full, threads [2][]float64
	for r := range b.cfg.rounds {
		for _, s := range b.order(r) {
			first, last, nThreads, err := b.groupRound(ctx, s, r)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label, err)
			}
			k, extra := b.index(s), float64(b.cfg.groupN-1)
			perExtra[k][0] = append(perExtra[k][0], (last.rss-first.rss)/extra)
			perExtra[k][1] = append(perExtra[k][1], (last.pss-first.pss)/extra)
			perExtra[k][2] = append(perExtra[k][2], (last.uss-first.uss)/extra)
			full[k] = append(full[k], last.rss/1024)
			threads[k] = append(threads[k], float64(nThreads))
		}
	}
	n := b.cfg.groupN
	b.res.add(fmt.Sprintf("grouped shim: RSS with %d containers", n), "MiB", 2, median(full[0]), median(full[1]))
	for i, name := range []string{"RSS", "PSS", "USS"} {
		var goals []goal
		if name == "RSS" {
			goals = []goal{maxValue(150)}
		}
		b.res.add("grouped shim: "+name+" per extra container", "KiB", 0,
			median(perExtra[0][i]), median(perExtra[1][i]), goals...)
	}
	b.res.add(fmt.Sprintf("grouped shim: OS threads with %d containers", n), "threads", 0,
		median(threads[0]), median(threads[1]))
	return nil
}

// groupRound runs one grouped shim: memory with one container, then with
// groupN, checking every container landed in the same shim.
func (b *bench) groupRound(ctx context.Context, s shim, r int) (first, last mem, threads int, err error) {
	flags := []string{"-d", "--annotation", fmt.Sprintf("%s=bench-%s-%d", groupAnnotation, s.key, r)}
	var ids []string
	defer func() {
		err = errors.Join(err, b.removeAll(ctx, ids))
	}()
	var shimPid int
	for i := range b.cfg.groupN {
		id := b.newID("group", s)
		if _, err := b.d.ctr(ctx, b.runArgs(s, flags, id, sleeper...)...); err != nil {
			return first, last, 0, err
		}
		ids = append(ids, id)
		pid, err := b.shimOfID(ctx, s, id)
		if err != nil {
			return first, last, 0, err
		}
		if i == 0 {
			shimPid = pid
			m, err := b.settledMem(ctx, pid)
			if err != nil {
				return first, last, 0, err
			}
			first = m[0]
		} else if pid != shimPid {
			return first, last, 0, fmt.Errorf("not grouped: %s is served by shim %d, %s by %d", id, pid, ids[0], shimPid)
		}
	}
	m, err := b.settledMem(ctx, shimPid)
	if err != nil {
		return first, last, 0, err
	}
	last = m[0]
	threads, err = readThreads(shimPid)
	return first, last, threads, err
}

// driftPhase runs driftExecs execs in one container per shim, alternating
// between the shims in chunks of driftBase, and reports each shim's growth
// from the baseline taken after the first chunk to the end. A single
// reading moves by a few hundred KiB with where it falls between two
// collections (garbage not yet collected, pages the runtime has not handed
// back yet), so the baseline and the end are each the median of
// driftSamples readings, one after each of driftSamples short runs of
// execs (the last ones of the run for the end). That median still moves
// with where each reading falls in the collector's cycle (readings spread
// over 480 KiB in a run), so the target is read on the floor instead: the
// least anonymous memory of driftFloorExecs readings, one after each of
// as many execs, at the baseline and at the end. Anonymous memory is what
// the target is read on: the binary's file pages, which the shim drops and
// maps back with what it runs (cmd/shim/text_linux.go), are the page
// cache's, and are reported only in RSS. The RSS at every tenth of the run
// goes into a note, to tell a leak (linear) from heap growth (a step).
func (b *bench) driftPhase(ctx context.Context) error {
	var ids [2]string
	var pids [2]int
	for k, s := range b.shims {
		ids[k] = b.newID("drift", s)
		if _, err := b.d.ctr(ctx, b.runArgs(s, []string{"-d"}, ids[k], sleeper...)...); err != nil {
			return err
		}
		var err error
		if pids[k], err = b.shimOfID(ctx, s, ids[k]); err != nil {
			return err
		}
	}
	var failed [2]atomic.Int64
	var firstErr [2]error
	var curve [2][]string
	// run runs n execs in each shim (leanshim only with -drift-lean-only),
	// in the order of round i.
	run := func(i, n int) error {
		for _, s := range b.order(i) {
			k := b.index(s)
			if k == 1 && b.cfg.driftLean {
				continue
			}
			err := b.execMany(ctx, ids[k], n, b.cfg.driftConc, &failed[k])
			firstErr[k] = cmp.Or(firstErr[k], err)
		}
		return ctx.Err()
	}
	// samples takes driftSamples settled readings of both shims, each
	// after sampleExecs more execs, and returns them per shim.
	sampleExecs := max(1, b.cfg.driftBase/20)
	samples := func(i int) (m [2][]mem, err error) {
		for j := range driftSamples {
			if err := run(i+j, sampleExecs); err != nil {
				return m, err
			}
			r, err := b.settledMem(ctx, pids[0], pids[1])
			if err != nil {
				return m, err
			}
			m[0], m[1] = append(m[0], r[0]), append(m[1], r[1])
		}
		return m, nil
	}
	// floor runs driftFloorExecs execs one at a time in each shim and
	// returns, per shim, the least anonymous memory read after each: the
	// shim's live memory just after a collection has handed its free pages
	// back (leanshim at the Delete of the exec after a collection, every 20
	// or so execs; runc-v2's runtime in the background), which a leak
	// raises and garbage does not.
	floorExecs := min(driftFloorExecs, b.cfg.driftBase) // -smoke: fewer
	floor := func(i int) (f [2]float64) {
		for _, s := range b.order(i) {
			k := b.index(s)
			f[k] = math.NaN()
			if k == 1 && b.cfg.driftLean {
				continue
			}
			for range floorExecs {
				if _, err := b.exec(ctx, ids[k]); err != nil {
					failed[k].Add(1)
					firstErr[k] = cmp.Or(firstErr[k], err)
					continue
				}
				if m, err := readMem(pids[k]); err == nil && !(m.anon >= f[k]) { // NaN: the first
					f[k] = m.anon
				}
			}
		}
		return f
	}
	endExecs := driftSamples*sampleExecs + floorExecs // the end's readings run the last execs
	if b.cfg.driftExecs-b.cfg.driftBase < 2*endExecs {
		return fmt.Errorf("drift: %d execs after the baseline, need at least %d for its readings", b.cfg.driftExecs-b.cfg.driftBase, 2*endExecs)
	}
	every := max(b.cfg.driftBase, b.cfg.driftExecs/10)
	var base, end [2][]mem
	var baseFloor [2]float64
	done := 0
	for i := 0; done < b.cfg.driftExecs-endExecs; i++ {
		n := min(b.cfg.driftBase, b.cfg.driftExecs-endExecs-done)
		if err := run(i, n); err != nil {
			return err
		}
		done += n
		if i == 0 {
			var err error
			if base, err = samples(i); err != nil {
				return err
			}
			baseFloor = floor(i)
			done += endExecs
		}
		if i == 0 || done%every < n {
			for k, pid := range pids {
				m, _ := readMem(pid)
				curve[k] = append(curve[k], fmt.Sprintf("%d: %.0f", done, m.rss))
			}
		}
	}
	end, err := samples(1)
	if err != nil {
		return err
	}
	endFloor := floor(1)
	done += endExecs
	for k, pid := range pids {
		m, _ := readMem(pid)
		curve[k] = append(curve[k], fmt.Sprintf("%d: %.0f", done, m.rss))
	}
	growth := func(k int, get func(mem) float64) float64 {
		if k == 1 && b.cfg.driftLean {
			return math.NaN() // its container only idled
		}
		return median(mapMem(end[k], get)) - median(mapMem(base[k], get))
	}
	anon := func(m mem) float64 { return m.anon }
	b.res.add(fmt.Sprintf("memory drift: anonymous floor after %d execs − after %d (least of %d readings, one after each exec)",
		b.cfg.driftExecs, b.cfg.driftBase, floorExecs), "KiB", 0,
		endFloor[0]-baseFloor[0], endFloor[1]-baseFloor[1], maxValue(64))
	name := fmt.Sprintf("memory drift: anonymous, medians of %d settled readings, %d execs apart",
		driftSamples, sampleExecs)
	b.res.add(name, "KiB", 0, growth(0, anon), growth(1, anon))
	b.res.add("memory drift: USS, same", "KiB", 0, growth(0, func(m mem) float64 { return m.uss }), growth(1, func(m mem) float64 { return m.uss }))
	b.res.add("memory drift: RSS, same", "KiB", 0, growth(0, func(m mem) float64 { return m.rss }), growth(1, func(m mem) float64 { return m.rss }))
	var errs []error
	for k, s := range b.shims {
		threads, _ := readThreads(pids[k])
		b.res.note(fmt.Sprintf("drift, %s: RSS in KiB after N execs (%d in flight): %s; anonymous KiB, baseline readings %s, "+
			"end readings %s; anonymous floor %.0f at the baseline, %.0f at the end; %d threads at the end",
			s.label, b.cfg.driftConc, strings.Join(curve[k], ", "), memList(base[k], anon), memList(end[k], anon),
			baseFloor[k], endFloor[k], threads))
		if n := failed[k].Load(); n > 0 {
			errs = append(errs, fmt.Errorf("%s: %d of %d execs failed, first: %w", s.label, n, b.cfg.driftExecs, firstErr[k]))
		}
	}
	errs = append(errs, b.removeAll(ctx, ids[:]))
	return errors.Join(errs...)
}

// driftSamples is how many settled readings the drift phase takes at its
// baseline and at its end.
const driftSamples = 7

// driftFloorExecs is how many execs, one at a time, the drift phase reads
// memory after, at its baseline and at its end, for each floor: three or so
// of leanshim's collections at this heap (cmd/shim/tuning_linux.go,
// gcPercent).
const driftFloorExecs = 60

// mapMem returns get of each reading.
func mapMem(ms []mem, get func(mem) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = get(m)
	}
	return out
}

// memList renders get of each reading, for a note.
func memList(ms []mem, get func(mem) float64) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%.0f", get(m))
	}
	return strings.Join(parts, " ")
}

// settledMem waits cfg.settle, runs sync and reads the memory of pids.
func (b *bench) settledMem(ctx context.Context, pids ...int) ([]mem, error) {
	if err := sleepCtx(ctx, b.cfg.settle); err != nil {
		return nil, err
	}
	syscall.Sync()
	m := make([]mem, len(pids))
	for i, pid := range pids {
		var err error
		if m[i], err = readMem(pid); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// shimPids finds the shim of every container in ids and checks that each
// container has a shim of its own.
func (b *bench) shimPids(ctx context.Context, ids [2][]string) ([2][]int, error) {
	var pids [2][]int
	tasks, err := b.d.taskPids(ctx)
	if err != nil {
		return pids, err
	}
	seen := map[int]string{}
	for k, s := range b.shims {
		for _, id := range ids[k] {
			tp, ok := tasks[id]
			if !ok {
				return pids, fmt.Errorf("task %s is not running", id)
			}
			pid, err := shimOf(tp, s)
			if err != nil {
				return pids, err
			}
			if other, dup := seen[pid]; dup {
				return pids, fmt.Errorf("%s and %s share shim %d without a group", other, id, pid)
			}
			seen[pid] = id
			pids[k] = append(pids[k], pid)
		}
	}
	return pids, nil
}

// shimOfID finds the shim of one running container.
func (b *bench) shimOfID(ctx context.Context, s shim, id string) (int, error) {
	tasks, err := b.d.taskPids(ctx)
	if err != nil {
		return 0, err
	}
	tp, ok := tasks[id]
	if !ok {
		return 0, fmt.Errorf("task %s is not running", id)
	}
	return shimOf(tp, s)
}

// removeAll kills and deletes the containers ids ("" is skipped), all at once.
func (b *bench) removeAll(ctx context.Context, ids []string) error {
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == "" })
	ctx = context.WithoutCancel(ctx) // cleanup runs even after ^C
	return parallel(len(ids), func(i int) error { return b.d.remove(ctx, ids[i]) })
}

func (b *bench) index(s shim) int {
	if s.key == b.shims[0].key {
		return 0
	}
	return 1
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
