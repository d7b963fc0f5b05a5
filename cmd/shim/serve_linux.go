package main

import (
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

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/task"
)

// serve is the long-running daemon: config → log → reaper → publisher →
// task service → ttrpc server → wait for shutdown, then tear down in order.
func serve(cfg config) error {
	// One P: the shim is I/O bound, and every extra P costs an OS thread.
	runtime.GOMAXPROCS(1)
	log := openLog(cfg.debug)

	l, err := daemonListener(cfg)
	if err != nil {
		log.Error("listen", "error", err)
		return err
	}
	socket := l.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	r, err := reaper.New(reaper.Config{Subreaper: true, Log: log})
	if err != nil {
		return err
	}
	reaperDone := make(chan struct{})
	go func() { // owned by serve: stopped by cancel, joined at the end
		defer close(reaperDone)
		_ = r.Run(ctx)
	}()

	pub := task.NewPublisher(os.Getenv("TTRPC_ADDRESS"), cfg.namespace, log)
	pubDone := make(chan struct{})
	go func() { // owned by serve: ends after pub.Close once the queue is empty
		defer close(pubDone)
		_ = pub.Run(ctx)
	}()

	shutdown := make(chan struct{})
	svc := task.New(task.Config{
		Namespace: cfg.namespace,
		Processes: process.NewFactory(r),
		Publisher: pub,
		Log:       log,
		Shutdown:  func() { close(shutdown) }, // called once by the service
	})
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return err
	}
	taskapi.RegisterTaskService(srv, svc)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	signal.Ignore(unix.SIGPIPE) // a vanished peer is an error return, not death

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, l) }() // owned by serve: ends on Shutdown/Close

	log.Info("serving", "id", cfg.id, "namespace", cfg.namespace, "socket", socket)
	select {
	case <-shutdown:
		log.Info("shutdown requested")
	case sig := <-sigs:
		log.Info("signal", "signal", sig.String())
	case err := <-serveErr:
		log.Error("serve", "error", err)
	}

	// Stop taking requests (answers in flight, like the Shutdown rpc's, go out).
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	scancel()
	_ = os.Remove(socket)
	svc.WaitBackground()
	// Flush events (TaskDelete) before exiting.
	pub.Close()
	select {
	case <-pubDone:
	case <-time.After(5 * time.Second):
		log.Error("events not flushed within 5s")
	}
	cancel()
	<-reaperDone
	return nil
}

// daemonListener is fd 3 from start, or the -socket path.
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
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	fd, err := unix.Open("log", unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return slog.New(slog.DiscardHandler)
	}
	_ = unix.Dup2(fd, 2)
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
