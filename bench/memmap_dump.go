package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the memory map asks the introspected shim: its SIGUSR1 dump.

// goDump is what the shim's SIGUSR1 handler logs: its runtime.MemStats
// (bytes) and every goroutine, by the function that created it.
type goDump struct {
	stats   map[string]float64
	byMaker map[string]int
	total   int
}

// dumpGo signals the shim pid and parses its answer from containerd's log.
func (b *bench) dumpGo(ctx context.Context, pid int) (*goDump, error) {
	before, err := os.ReadFile(b.d.logPath)
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	var last *goDump
	for time.Now().Before(deadline) {
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
		all, err := os.ReadFile(b.d.logPath)
		if err != nil || len(all) < len(before) {
			continue
		}
		if last = parseDump(string(all[len(before):])); last != nil && last.complete() {
			return last, nil
		}
	}
	if last != nil {
		return last, nil // the table says it is incomplete
	}
	return nil, fmt.Errorf("shim %d: no goroutine dump in %s after SIGUSR1:\n%s", pid, b.d.logPath, tail(b.d.logPath))
}

// parseDump finds one memstats line and the goroutine lines after it in
// log; it returns nil until it has as many goroutines as memstats counts.
func parseDump(log string) *goDump {
	d := &goDump{stats: map[string]float64{}, byMaker: map[string]int{}}
	haveStats := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "msg=memstats"):
			for _, kv := range strings.Fields(line) {
				k, v, ok := strings.Cut(kv, "=")
				if x, err := strconv.ParseFloat(v, 64); ok && err == nil {
					d.stats[k] = x
				}
			}
			haveStats = true
		case haveStats && strings.Contains(line, "msg=goroutine "):
			_, q, ok := strings.Cut(line, " stack=")
			if !ok {
				continue
			}
			g, err := strconv.Unquote(strings.TrimSpace(q))
			if err != nil || !strings.HasPrefix(g, "goroutine ") {
				continue
			}
			d.total++
			d.byMaker[goroutineMaker(g)]++
		}
	}
	if !haveStats {
		return nil
	}
	return d
}

// complete reports whether the dump holds every goroutine its memstats
// line counted (a line the log FIFO could not take is dropped).
func (d *goDump) complete() bool { return float64(d.total) >= d.stats["goroutines"] }

// goroutineMaker names a goroutine by the function that started it (its
// "created by" line), or by its own first frame for goroutine 1.
func goroutineMaker(g string) string {
	lines := strings.Split(g, "\n")
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "created by "); ok {
			fn, _, _ := strings.Cut(rest, " in goroutine")
			return shortFunc(fn)
		}
	}
	if len(lines) > 1 {
		fn, _, _ := strings.Cut(lines[len(lines)-2], "(")
		return shortFunc(fn)
	}
	return "?"
}

func shortFunc(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
}
