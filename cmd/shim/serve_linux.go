package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/taskapiv3"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/task"
)

// shimAPI is the API the daemon serves containerd, the one thing that
// differs between the two daemons this binary can be: the task API shim that
// "start" spawns (containerd's runtime v2, 1.6 and 2.x), and the v1 shim that
// containerd 1.6's io.containerd.runtime.v1.linux runtime launches itself
// (v1_linux.go). Everything else, from the reaper to the
// shutdown order, is the same daemon.
type shimAPI struct {
	log *slog.Logger
	// sender delivers events to containerd; r is the daemon's reaper.
	sender func(r *reaper.Reaper) task.Sender
	// events filters what the task core publishes before it is queued.
	events func(*task.Publisher) task.Events
	// register puts the API's ttrpc services in front of the core (the
	// task service behind its orphanGuard) and returns what to run on
	// SIGTERM once the server has stopped (or nil).
	register func(srv *ttrpc.Server, core taskapi.TaskService, pub *task.Publisher) func(context.Context) error
	// sandbox: the daemon also serves the sandbox API (containerd 2.x's
	// sandboxer = "shim"), with pods made by the task core.
	sandbox bool
}

// taskShimAPI serves containerd.task.v2.Task and, for containerd 2.x, the
// same service as containerd.task.v3.Task (PROTOCOL.md §2.2), and forwards
// events over ttrpc to TTRPC_ADDRESS.
func taskShimAPI(cfg config) shimAPI {
	return shimAPI{
		log: openLog(cfg.debug),
		sender: func(*reaper.Reaper) task.Sender {
			return task.TTRPCSender(os.Getenv("TTRPC_ADDRESS"))
		},
		events: func(p *task.Publisher) task.Events { return p },
		register: func(srv *ttrpc.Server, core taskapi.TaskService, _ *task.Publisher) func(context.Context) error {
			taskapi.RegisterTaskService(srv, core)
			taskapiv3.RegisterTaskService(srv, core) // same methods, same messages: only the name differs
			return nil
		},
		sandbox: true,
	}
}

// serve is the long-running daemon: config → log → reaper → publisher →
// task service → ttrpc server → wait for shutdown, then tear down in order.
func serve(cfg config) error {
	// One P: the shim is I/O bound, and every extra P costs an OS thread.
	runtime.GOMAXPROCS(1)
	var api shimAPI
	switch {
	case cfg.id != "":
		api = taskShimAPI(cfg)
	case cfg.workdir != "":
		api = v1ShimAPI(cfg)
	default:
		return errors.New("serve needs -id (task API) or -workdir (v1 runtime)")
	}
	// Caught, not ignored: a vanished peer is an error return, not death,
	// and unlike SIG_IGN a handler is reset by execve(2), so the runtime,
	// loggers and (through crun) containers start with SIGPIPE's default.
	// Before startDaemon, which starts children. SIGPIPE is dropped below.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	defer signal.Stop(sigs)
	l, err := daemonListener(cfg)
	if err != nil {
		api.log.Error("listen", "error", err)
		return err
	}
	return serveOn(cfg, api, l, sigs)
}

// serveOn runs the daemon on l until the Shutdown rpc, a signal from sigs
// or a failure of the server. It returns an error (and the shim exits
// non-zero) only for the last.
func serveOn(cfg config, api shimAPI, l net.Listener, sigs <-chan os.Signal) error {
	d, err := startDaemon(cfg, api, l)
	if err != nil {
		_ = l.Close()
		api.log.Error("start", "error", err)
		return err
	}
	api.log.Info("serving", "id", cfg.id, "namespace", cfg.namespace, "socket", d.socket, "orphan_grace", d.guard.cfg.Grace)
	signaled := false
	var serveErr error
wait:
	for {
		select {
		case <-d.shutdown:
			api.log.Info("shutdown requested")
			break wait
		case sig := <-sigs:
			switch sig {
			case unix.SIGPIPE:
				continue // the write that raised it got EPIPE
			case unix.SIGUSR1:
				dumpState(api.log) // for operators: kill -USR1 <shim pid>
				continue
			case unix.SIGUSR2:
				d.trace.toggle() // the exec-latency trace (trace_linux.go)
				continue
			}
			api.log.Info("signal", "signal", sig.String())
			signaled = true
			break wait
		case err := <-d.serveErr:
			api.log.Error("serve", "error", err)
			serveErr = fmt.Errorf("serve: %w", err)
			break wait
		}
	}
	d.stop(signaled)
	return serveErr // non-nil: the shim exits non-zero
}

// daemon is what serve runs. startDaemon starts its goroutines; stop ends
// and joins them.
type daemon struct {
	log       *slog.Logger
	socket    string
	cancel    context.CancelFunc // stops the reaper and, at last, the publisher
	pub       *task.Publisher
	svc       *task.Service
	guard     *orphanGuard // svc as the faces see it; ends a forgotten shim
	srv       *ttrpc.Server
	terminate func(context.Context) error // the API's SIGTERM work, or nil
	trace     *tracer                     // exec-latency trace, off until SIGUSR2

	shutdown   chan struct{} // closed by the service's Shutdown rpc
	serveErr   chan error    // srv.Serve's result
	reaperDone chan struct{}
	pubDone    chan struct{}
	oomDone    chan struct{} // closed when the OOM watcher's loop returns
}

// watchOOM finds the cgroup hierarchy and starts the one OOM watcher of the
// shim, whose reports go to report (the task service's ReportOOM, which
// queues TaskOOM in the container's event order). Without cgroups the shim
// runs on, without stats and OOM events.
func (d *daemon) watchOOM(ctx context.Context, report func(id string)) (*cgroup.Hierarchy, task.OOMWatcher) {
	close(d.oomDone) // reopened below if a watcher runs
	hier, err := cgroup.Detect()
	if err != nil {
		d.log.Warn("no cgroup hierarchy: no stats or OOM events", "error", err)
		return nil, nil
	}
	w, err := cgroup.NewOOMWatcher(report)
	if err != nil {
		d.log.Warn("no OOM watcher", "error", err)
		return hier, nil
	}
	d.oomDone = make(chan struct{})
	go func() { // owned by d: stopped by cancel, joined by stop
		defer close(d.oomDone)
		defer w.Close()
		_ = w.Run(ctx)
	}()
	return hier, w
}

func startDaemon(cfg config, api shimAPI, l net.Listener) (*daemon, error) {
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{log: api.log, socket: l.Addr().String(), cancel: cancel, shutdown: make(chan struct{}),
		serveErr: make(chan error, 1), reaperDone: make(chan struct{}), pubDone: make(chan struct{}),
		oomDone: make(chan struct{})}
	d.trace = &tracer{log: api.log}
	r, err := reaper.New(reaper.Config{Subreaper: true, Log: api.log, Forking: d.trace.forking, Reaped: d.trace.reaped})
	if err != nil {
		cancel()
		return nil, err
	}
	srv, err := newServer(api.log, cfg.debug, d.trace)
	if err != nil {
		cancel()
		return nil, err
	}
	d.srv = srv
	go func() { // owned by d: stopped by cancel, joined by stop
		defer close(d.reaperDone)
		_ = r.Run(ctx)
	}()
	d.pub = task.NewPublisher(traceSender{api.sender(r), d.trace}, cfg.namespace, api.log)
	go func() { // owned by d: ends after pub.Close once the queue is empty, joined by stop
		defer close(d.pubDone)
		_ = d.pub.Run(ctx)
	}()
	evs := api.events(d.pub)
	// The watcher reports only containers the service has Added, so d.svc
	// is set before the first report.
	hier, oom := d.watchOOM(ctx, func(id string) { d.svc.ReportOOM(id) })
	var pods *pod.Factory
	if api.sandbox {
		pods = pod.NewFactory(r, hier, api.log)
	}
	d.svc = task.New(task.Config{
		Namespace: cfg.namespace,
		Processes: process.NewFactory(r),
		Publisher: evs,
		Cgroups:   hier,
		OOM:       oom,
		Pods:      pods,
		Log:       api.log,
		Shutdown:  func() { close(d.shutdown) }, // called once by the service
	})
	d.guard = newOrphanGuard(d.svc, orphanConfig{Grace: orphanGrace(api.log), Count: d.svc.Count, Log: api.log})
	d.terminate = api.register(srv, d.guard, d.pub)
	if api.sandbox {
		sandboxapi.RegisterSandboxService(srv, sandboxGuard{SandboxService: d.svc, g: d.guard})
	}
	// The shim is empty until the first Create: the grace period runs.
	d.guard.arm()
	go func() { d.serveErr <- srv.Serve(ctx, l) }() // owned by d: ends on Shutdown/Close
	return d, nil
}

// stop tears down in order: stop the orphan timer and refuse Creates,
// remove the socket's path, stop taking requests (answers in flight, like
// the Shutdown rpc's, go out), on a signal run the API's terminate, wait
// for background work, flush events (TaskDelete), stop the reaper.
//
// The path goes first, while the listener still holds it: once it is gone a
// `start` for the same group makes a new shim on a new socket at that path,
// which this shim must not remove on its way out.
func (d *daemon) stop(signaled bool) {
	d.guard.close()
	_ = os.Remove(d.socket)
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := d.srv.Shutdown(sctx); err != nil {
		_ = d.srv.Close()
	}
	scancel()
	if signaled && d.terminate != nil {
		tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.terminate(tctx); err != nil {
			d.log.Error("terminate", "error", err)
		}
		tcancel()
	}
	d.svc.WaitBackground()
	d.pub.Close()
	select {
	case <-d.pubDone:
	case <-time.After(5 * time.Second):
		d.log.Error("events not flushed within 5s")
	}
	d.cancel()
	<-d.reaperDone
	<-d.oomDone
}

// orphanGrace reads orphanGraceEnv, once, when the daemon starts.
func orphanGrace(log *slog.Logger) time.Duration {
	grace, err := parseOrphanGrace(os.Getenv(orphanGraceEnv))
	if err != nil {
		log.Warn("orphan grace: using the default", "default", grace, "error", err)
	}
	return grace
}

// newServer returns the ttrpc server: root (same user) only, settling
// memory after a container's calls (settler), tracing exec starts while tr
// is on, and with debug logging of
// every call by its full method name, which also tells which task API
// version containerd speaks.
func newServer(log *slog.Logger, debug bool, tr *tracer) (*ttrpc.Server, error) {
	s := newSettler(log)
	intercept := tr.intercept(s.intercept)
	if debug {
		traced := intercept
		intercept = func(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
			log.Debug("rpc", "method", info.FullMethod)
			return traced(ctx, u, info, m)
		}
	}
	return ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(intercept))
}

// daemonListener is fd 3 (from start, or from containerd 1.6's v1 runtime),
// or the -socket path.
func daemonListener(cfg config) (net.Listener, error) {
	if cfg.socket != "" {
		return listen(cfg.socket)
	}
	f := os.NewFile(3, "shim socket")
	if f == nil {
		return nil, errors.New("no listener on fd 3")
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener on fd 3: %w", err)
	}
	return l, nil
}

// openLog logs to the bundle's "log" FIFO, which containerd copies to its
// own log; stderr is pointed there too so a panic is not lost. The FIFO is
// written without blocking: while containerd is down nobody drains it, and
// a full log must cost log lines, never a stuck shim.
func openLog(debug bool) *slog.Logger {
	fd, err := unix.Open("log", unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return slog.New(slog.DiscardHandler)
	}
	_ = unix.Dup2(fd, 2)
	return newLogger(fd, debug)
}

func newLogger(fd int, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(dropWriter(fd), &slog.HandlerOptions{Level: level}))
}

// dropWriter writes to a non-blocking fd and drops what does not fit.
type dropWriter int

func (w dropWriter) Write(b []byte) (int, error) {
	for {
		_, err := unix.Write(int(w), b)
		if err == unix.EINTR {
			continue
		}
		return len(b), nil // EAGAIN or a gone reader: the line is dropped
	}
}

// dumpState logs the daemon's memory statistics and every goroutine's
// stack, as containerd's shims do on SIGUSR1. Each goroutine is a line of
// its own: the log is a FIFO written without blocking (dropWriter), and a
// line longer than PIPE_BUF could be cut short. bench's memory map counts
// the lines against "goroutines" to know it has them all.
func dumpState(log *slog.Logger) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	log.Info("memstats", "goroutines", runtime.NumGoroutine(), "heap_inuse", m.HeapInuse, "heap_alloc", m.HeapAlloc,
		"heap_sys", m.HeapSys, "heap_released", m.HeapReleased, "heap_objects", m.HeapObjects,
		"stack_inuse", m.StackInuse, "stack_sys", m.StackSys, "mspan_inuse", m.MSpanInuse, "mspan_sys", m.MSpanSys,
		"mcache_sys", m.MCacheSys, "gc_sys", m.GCSys, "other_sys", m.OtherSys, "buckhash_sys", m.BuckHashSys,
		"sys", m.Sys, "num_gc", m.NumGC)
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		log.Info("goroutine", "stack", string(g))
	}
}
