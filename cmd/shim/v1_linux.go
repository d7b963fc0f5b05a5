package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/task"
)

// publishTimeout bounds one `containerd publish` (containerd-shim allows 30 s;
// a failed attempt is retried by the publisher anyway).
const publishTimeout = 10 * time.Second

// v1ShimAPI is the daemon as containerd 1.6's v1 runtime runs it (PROTOCOL.md
// §4.2): `shim -namespace N -workdir W -address A -containerd-binary B ...`
// with no -id and no action, cwd = bundle, its listener on fd 3 made by
// containerd, stdout and stderr the FIFOs shim.stdout.log and
// shim.stderr.log of the work dir. It serves containerd.runtime.linux.shim.v1.Shim
// and publishes only TaskExit, by running the containerd binary.
func v1ShimAPI(cfg config) shimAPI {
	log := openV1Log(cfg.workdir, cfg.debug)
	return shimAPI{
		log: log,
		sender: func(r *reaper.Reaper) task.Sender {
			return binarySender{r: r, containerd: cmp.Or(cfg.containerdBinary, "containerd"), address: cfg.address}
		},
		events: func(p *task.Publisher) task.Events { return task.V1Events(p) },
		register: func(srv *ttrpc.Server, core taskapi.TaskService, pub *task.Publisher) func(context.Context) error {
			v1 := task.NewV1(core, task.V1Config{
				RuntimeRoot:   cfg.runtimeRoot,
				SystemdCgroup: cfg.systemdCgroup,
				CriuPath:      cfg.criu,
				Workdir:       cfg.workdir,
				Flush:         pub.Flush,
				Log:           log,
			})
			shimv1.RegisterShimService(srv, v1)
			// containerd-shim's SIGTERM: kill and delete the container.
			return v1.Terminate
		},
	}
}

// openV1Log opens the work dir's two FIFOs, which containerd created and
// drains (to its own output with shim_debug, else to nowhere), points fds 1
// and 2 at them and logs to the first, as containerd-shim does. Each FIFO is
// opened read-write: the shim then holds a reader itself, so a write never
// fails with EPIPE nor raises SIGPIPE while containerd, the other reader, is
// down or restarting (fifo(7)); containerd's own pipes on fds 1 and 2 are
// dropped for the same reason. Non-blocking: with nobody draining, a full
// FIFO costs log lines, not a stuck shim.
func openV1Log(workdir string, debug bool) *slog.Logger {
	log := slog.New(slog.DiscardHandler)
	for i, name := range []string{"shim.stdout.log", "shim.stderr.log"} {
		fd, err := unix.Open(filepath.Join(workdir, name), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // run by hand: no FIFOs, no log
		}
		_ = unix.Dup2(fd, 1+i) // dup2 clears O_CLOEXEC on fd 1 or 2 only
		if i == 0 {
			log = newLogger(fd, debug)
		} else {
			_ = unix.Close(fd)
		}
	}
	return log
}

// binarySender publishes an event the v1 way (PROTOCOL.md §3.3): it runs
// `<containerd> --address <grpc> publish --topic T --namespace N` with the
// event's Any on stdin; containerd stamps the time itself. The command is
// started and reaped by the daemon's reaper, like every child of the shim.
type binarySender struct {
	r          *reaper.Reaper
	containerd string
	address    string
}

func (s binarySender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	data, err := proto.Marshal(env.Event)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", env.Topic, err)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	cmd := exec.Command(s.containerd, "--address", s.address, "publish", "--topic", env.Topic, "--namespace", env.Namespace)
	out, e, err := s.r.RunCmd(ctx, cmd, data, true)
	if err != nil {
		return fmt.Errorf("%s publish %s: %w", s.containerd, env.Topic, err)
	}
	if e.Status != 0 {
		return fmt.Errorf("%s publish %s: exit status %d: %s", s.containerd, env.Topic, e.Status, bytes.TrimSpace(out))
	}
	return nil
}
