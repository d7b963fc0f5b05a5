package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// downTime is how long TestDaemonDown keeps containerd away; the issue asks
// for 120 s. LEANSHIM_DAEMON_DOWN (a Go duration) shortens it while working
// on the test.
func downTime(t *testing.T) time.Duration {
	if s := os.Getenv("LEANSHIM_DAEMON_DOWN"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LEANSHIM_DAEMON_DOWN=%q: %v", s, err)
		}
		return d
	}
	return 120 * time.Second
}

// chattyScript writes 1 MiB to stdout every second and records each round
// (a counter and the time) in /out/ticks; a failed write (EPIPE, or head
// killed by SIGPIPE) is recorded in /out/errors.
const chattyScript = `i=0
while :; do
  head -c 1048576 /dev/zero || echo "head exit $?" >> /out/errors
  i=$((i+1)); echo "$i $(date +%s)" >> /out/ticks
  sleep 1
done`

// maxTickGap is the longest a round of chattyScript may take: a 1 s sleep
// and 1 MiB through a pipe the shim drains. Blocking on a full FIFO would
// stretch a round to the length of the outage.
const maxTickGap = 4 * time.Second

// TestDaemonDown: containerd is killed and stays away for two minutes (then
// is killed and restarted three more times) while a container writes 1 MiB/s
// to a stdout FIFO whose reader (the attached ctr) went down with it.
//   - The writer never blocks and never gets EPIPE/SIGPIPE: its rounds keep
//     their one-second pace throughout.
//   - The shim counts and logs what it discarded while the FIFO had no
//     reader, and a reader that attaches afterwards gets output again.
//   - Two containers that exit meanwhile (one with status 7, one killed by
//     the OOM killer) have their /tasks/exit and /tasks/oom delivered to the
//     restarted containerd exactly once, and ctr reports their real status.
func TestDaemonDown(t *testing.T) {
	t.Parallel()
	d := startContainerd(t, withSubreaper(), withDebug())
	out := t.TempDir()
	bind := []string{"--mount", "type=bind,src=" + out + ",dst=/out,options=rbind:rw"}

	chatty := d.newID("chatty")
	// Output thrown away: a chatty container writes megabytes a second.
	reader := d.startCtrTo(t, io.Discard, 30*time.Minute, d.runArgs(bind, chatty, "/bin/sh", "-c", chattyScript)...)
	waitTicks(t, out, 3)
	exits := d.newID("exits")
	if r := d.run(t, []string{"-d"}, exits, "/bin/sh", "-c", "sleep 10; exit 7"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	oom := d.newID("oom")
	if r := d.run(t, []string{"-d", "--memory-limit", "16777216"}, oom, "/bin/sh", "-c",
		"sleep 10; x=a; while :; do x=$x$x; done"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	// The shims that publish the outage's /tasks/exit and /tasks/oom.
	shims := map[string]int{}
	for _, id := range []string{exits, oom} {
		pid, _, _ := taskStatus(t, d, id)
		if shims[id] = parentPid(pid); shims[id] <= 0 {
			t.Fatalf("%s: no shim for task pid %d", id, pid)
		}
	}

	// containerd goes away, and the ctr reading the FIFO with it. ctr dies
	// first, by SIGKILL, as the CRI plugin does when containerd is killed:
	// the FIFOs stay for the next reader (a ctr that sees containerd go
	// first would remove them on its way out).
	logFrom := fileSize(t, d.logPath)
	reader.stop()
	d.kill9(t)
	down := downTime(t)
	t.Logf("containerd is down for %v", down)
	time.Sleep(down)
	d.restart(t)

	// The events of the outage reach the new containerd, each once.
	waitTaskStatus(t, d, chatty, "RUNNING")
	waitTaskStatus(t, d, exits, "STOPPED")
	waitTaskStatus(t, d, oom, "STOPPED")
	forwarded := func() (exit, oomEv int) {
		log := readFrom(t, d.logPath, logFrom)
		return countForwarded(log, "/tasks/exit"), countForwarded(log, "/tasks/oom")
	}
	if !poll(eventTimeout+10*time.Second, func() bool { e, o := forwarded(); return e >= 2 && o >= 1 }) {
		e, o := forwarded()
		t.Fatalf("after the restart containerd got %d /tasks/exit and %d /tasks/oom; want 2 and 1", e, o)
	}
	// Their real status is reported. Removing the tasks also ends their
	// shims, which flush their event queues first: once both shims are gone
	// no retry of an outage event can still be pending, and the counts are
	// final. (A fixed wait longer than the longest retry delay proved less.)
	for id, want := range map[string]string{exits: "7", oom: "137"} {
		r := d.ctr(t, "task", "rm", id)
		if r.code != 0 || !strings.Contains(r.stderr, "non-zero exit code "+want) {
			t.Errorf("%s: task rm: want exit status %s reported; got %v", id, want, r)
		}
		d.mustCtr(t, "container", "rm", id)
	}
	for id, shim := range shims {
		if !poll(eventTimeout+10*time.Second, func() bool { return !shimAlive(shim) }) {
			t.Fatalf("%s: shim %d still runs after its task was removed", id, shim)
		}
	}
	if e, o := forwarded(); e != 2 || o != 1 {
		t.Errorf("containerd got %d /tasks/exit and %d /tasks/oom; want each exactly once (2 and 1)", e, o)
	}

	// A new reader gets output again, and the shim said what it discarded.
	n := attachAndCount(t, d, chatty, 2<<20)
	if n < 2<<20 {
		t.Errorf("a reader attached after the outage got %d bytes in its first seconds, want at least 2 MiB", n)
	}
	discarded := discardedBytes(readFrom(t, d.logPath, logFrom))
	if want := int64(down/time.Second) << 20 / 2; discarded < want {
		t.Errorf("the shim logged %d bytes discarded during the outage, want at least %d (1 MiB/s for %v)", discarded, want, down)
	}

	// Repeated crashes: the pace holds.
	for i := range 3 {
		d.kill9(t)
		time.Sleep(3 * time.Second)
		d.restart(t)
		if pid := waitTaskStatus(t, d, chatty, "RUNNING"); pid <= 0 {
			t.Fatalf("restart %d: no pid", i)
		}
	}
	if n := attachAndCount(t, d, chatty, 1<<20); n < 1<<20 {
		t.Errorf("after repeated restarts a reader got %d bytes, want at least 1 MiB", n)
	}
	checkTicks(t, out)

	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", chatty)
	waitTaskStatus(t, d, chatty, "STOPPED")
	if r := d.ctr(t, "task", "rm", chatty); r.code != 0 || !strings.Contains(r.stderr, "non-zero exit code 137") {
		t.Errorf("%s: task rm: want exit status 137 reported; got %v", chatty, r)
	}
	d.mustCtr(t, "container", "rm", chatty)
	assertNoLeftovers(t, d, chatty, exits, oom)
}

// attachAndCount attaches ctr to the task's FIFOs and returns how many bytes
// of output it read before it got want or five seconds passed.
func attachAndCount(t *testing.T, d *daemon, id string, want int64) int64 {
	t.Helper()
	var n countingWriter
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, d.flavor.ctr, d.ctrArgs([]string{"task", "attach", id})...)
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &n, &stderr
	defer func() { t.Logf("ctr task attach: %d bytes; stderr: %q", n.n.Load(), stderr.String()) }()
	if err := cmd.Start(); err != nil {
		t.Fatalf("ctr task attach: %v", err)
	}
	poll(5*time.Second, func() bool { return n.n.Load() >= want })
	cancel()
	_ = cmd.Wait() // killed
	return n.n.Load()
}

type countingWriter struct{ n atomic.Int64 }

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return len(b), nil
}

func waitTicks(t *testing.T, dir string, n int) {
	t.Helper()
	if !poll(30*time.Second, func() bool { return len(readTicks(t, dir)) >= n }) {
		t.Fatalf("the container wrote %d rounds, want %d", len(readTicks(t, dir)), n)
	}
}

// readTicks returns the times chattyScript recorded, in order.
func readTicks(t *testing.T, dir string) []time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ticks"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ts []time.Time
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		sec, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("ticks line %q", line)
		}
		ts = append(ts, time.Unix(sec, 0))
	}
	return ts
}

// checkTicks: the writer kept its pace the whole time, and no write failed.
func checkTicks(t *testing.T, dir string) {
	t.Helper()
	ts := readTicks(t, dir)
	if len(ts) < 10 {
		t.Fatalf("only %d rounds recorded", len(ts))
	}
	for i := 1; i < len(ts); i++ {
		if gap := ts[i].Sub(ts[i-1]); gap > maxTickGap {
			t.Errorf("round %d took %v (from %s): the writer blocked", i, gap, ts[i-1].Format(time.TimeOnly))
		}
	}
	if total := ts[len(ts)-1].Sub(ts[0]); len(ts) < int(total/time.Second)/2 {
		t.Errorf("%d rounds in %v: the writer was held up", len(ts), total)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "errors")); err == nil && len(b) > 0 {
		t.Errorf("writes failed in the container: %s", b)
	} else if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	t.Logf("%d rounds of 1 MiB over %v", len(ts), ts[len(ts)-1].Sub(ts[0]))
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readFrom(t *testing.T, path string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

// countForwarded counts the events of topic that containerd's event
// exchange logged as forwarded to it by a shim (at debug level).
func countForwarded(log, topic string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "event forwarded") && strings.Contains(line, "topic="+topic+" ") {
			n++
		}
	}
	return n
}

var discardedRE = regexp.MustCompile(`output fifo has a reader again.*discarded_bytes=(\d+)`)

// discardedBytes sums what the shims logged as discarded while an output
// FIFO had no reader.
func discardedBytes(log string) int64 {
	var sum int64
	for _, m := range discardedRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		sum += n
	}
	return sum
}
