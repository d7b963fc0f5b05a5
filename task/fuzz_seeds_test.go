package task

import (
	"strings"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/types"
)

// The type URLs containerd puts on an exec's process and an update's
// resources.
const (
	fuzzSpecURL      = "types.containerd.io/opencontainers/runtime-spec/1/Process"
	fuzzResourcesURL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
)

// fuzzSeedIDs are container ids for every method: the fixture's, one to
// create, and ones validID must refuse (a path, an escape, empty, too long).
var fuzzSeedIDs = []string{"a", "c1", "c2", fuzzSentinel, "", "../x", "a/b", strings.Repeat("a", 300)}

type fuzzSeed struct {
	method byte
	req    []byte
}

// fuzzSeeds is the seed corpus: well-formed requests of every method, then
// bytes that are not requests at all.
func fuzzSeeds() []fuzzSeed {
	var seeds []fuzzSeed
	add := func(method string, reqs ...proto.Message) {
		for _, r := range reqs {
			b, err := proto.Marshal(r)
			if err != nil {
				panic(err) // a seed that cannot be encoded is a bug in this file
			}
			seeds = append(seeds, fuzzSeed{fuzzMethodIndex(method), b})
		}
	}
	for _, id := range fuzzSeedIDs {
		add("Create", &taskapi.CreateTaskRequest{Id: id, Bundle: "/sandbox/bundles/ok"})
		add("Start", &taskapi.StartRequest{Id: id})
		add("State", &taskapi.StateRequest{Id: id})
		add("Delete", &taskapi.DeleteRequest{Id: id})
		add("Pids", &taskapi.PidsRequest{Id: id})
		add("Pause", &taskapi.PauseRequest{Id: id})
		add("Resume", &taskapi.ResumeRequest{Id: id})
		add("Wait", &taskapi.WaitRequest{Id: id})
		add("Stats", &taskapi.StatsRequest{Id: id})
		add("Connect", &taskapi.ConnectRequest{Id: id})
		add("Kill", &taskapi.KillRequest{Id: id, Signal: 9})
		add("Exec", &taskapi.ExecProcessRequest{Id: id, ExecId: "x3", Spec: fuzzAny(fuzzSpecURL, fuzzExecSpec)})
	}
	for _, x := range []string{"x1", "x2", "xt", "x9", "../e", ""} {
		add("Start", &taskapi.StartRequest{Id: "c2", ExecId: x})
		add("State", &taskapi.StateRequest{Id: "c2", ExecId: x})
		add("Delete", &taskapi.DeleteRequest{Id: "c2", ExecId: x})
		add("Wait", &taskapi.WaitRequest{Id: "c2", ExecId: x})
		add("Kill", &taskapi.KillRequest{Id: "c2", ExecId: x, Signal: 15})
		add("CloseIO", &taskapi.CloseIORequest{Id: "c2", ExecId: x, Stdin: true})
		add("ResizePty", &taskapi.ResizePtyRequest{Id: "c2", ExecId: x, Width: 80, Height: 24})
	}
	add("Create", fuzzCreateSeeds()...)
	add("Exec", fuzzExecSeeds()...)
	add("Kill", fuzzKillSeeds()...)
	add("Update", fuzzUpdateSeeds()...)
	add("Checkpoint", fuzzCheckpointSeeds()...)
	for i := range fuzzMethods {
		for _, junk := range [][]byte{nil, {0xff}, {0x0a}, {0x0a, 0x05, 'a'}, {0x0a, 0x02, 'c', '2', 0x12, 0xff, 0x01}, {0x08, 0x80}} {
			seeds = append(seeds, fuzzSeed{byte(i), junk})
		}
	}
	return seeds
}

func fuzzMethodIndex(name string) byte {
	for i, m := range fuzzMethods {
		if m.name == name {
			return byte(i)
		}
	}
	panic("no fuzz method " + name)
}

func fuzzCreateSeeds() []proto.Message {
	var reqs []proto.Message
	for _, b := range []string{"/sandbox/bundles/shared", "/sandbox/bundles/badspec", "/sandbox/bundles/nospec",
		"/sandbox/bundles/missing", "/sandbox/io/file", "/sandbox/../etc", "/nonexistent", "bundle", ""} {
		reqs = append(reqs, &taskapi.CreateTaskRequest{Id: "a", Bundle: b})
	}
	ok := "/sandbox/bundles/ok"
	stdio := []struct{ in, out, err string }{
		{"/sandbox/io/in", "/sandbox/io/out", "/sandbox/io/out"},
		{"", "fifo:///sandbox/io/out", ""},
		{"", "file:///sandbox/logs/a.log", "file:///sandbox/logs/a.log"},
		{"/sandbox/io/missing", "", ""},
		{"", "/sandbox/io/file", ""},
		{"", "binary:///bin/true", ""},
		{"unknown://x", "", ""},
		{"", "file://", ""},
	}
	for _, s := range stdio {
		reqs = append(reqs, &taskapi.CreateTaskRequest{Id: "a", Bundle: ok, Stdin: s.in, Stdout: s.out, Stderr: s.err})
	}
	runc := func(o *runcopts.Options) *gogotypes.Any { a, _ := marshalAny(o); return a }
	rtopts := func(o *runtimeoptions.Options) *gogotypes.Any { a, _ := marshalAny(o); return a }
	for _, o := range []*gogotypes.Any{
		runc(&runcopts.Options{BinaryName: "runc", Root: "/sandbox/root", IoUid: 1000, IoGid: 1000}),
		runc(&runcopts.Options{BinaryName: "crun"}),
		rtopts(&runtimeoptions.Options{ConfigPath: "/sandbox/runtime.toml"}),
		rtopts(&runtimeoptions.Options{ConfigPath: "/sandbox/io/in"}),
		rtopts(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"runc\"\nSystemdCgroup = true\n")}),
		fuzzAny("containerd.runc.v1.Options", "\xff"),
		fuzzAny("example.com/Nope", "x"),
	} {
		reqs = append(reqs, &taskapi.CreateTaskRequest{Id: "a", Bundle: ok, Options: o})
	}
	return append(reqs,
		&taskapi.CreateTaskRequest{Id: "a", Bundle: ok, Terminal: true},
		&taskapi.CreateTaskRequest{Id: "a", Bundle: ok, Checkpoint: "/sandbox/ckpt", ParentCheckpoint: "/sandbox/ckpt"},
		&taskapi.CreateTaskRequest{Id: "a", Bundle: ok, Rootfs: []*types.Mount{{Type: "tmpfs", Source: "tmpfs", Target: "/"}}},
	)
}

func fuzzExecSeeds() []proto.Message {
	spec := fuzzAny(fuzzSpecURL, fuzzExecSpec)
	return []proto.Message{
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x1", Spec: spec},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "../e", Spec: spec},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "", Spec: spec},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: strings.Repeat("e", 300), Spec: spec},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: fuzzAny(fuzzSpecURL, "not json")},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3"},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: spec, Terminal: true},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: spec, Stdin: "/sandbox/io/in", Stdout: "/sandbox/io/out"},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: spec, Stdout: "file:///sandbox/logs/x3.log"},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: spec, Stdout: "binary:///bin/true"},
		&taskapi.ExecProcessRequest{Id: "c2", ExecId: "x3", Spec: spec, Stdout: "/etc/passwd"},
	}
}

func fuzzKillSeeds() []proto.Message {
	var reqs []proto.Message
	for _, sig := range []uint32{0, 9, 15, 19, 65, 1 << 31, 4294967295} {
		reqs = append(reqs,
			&taskapi.KillRequest{Id: "c2", Signal: sig},
			&taskapi.KillRequest{Id: "c1", Signal: sig, All: true},
			&taskapi.KillRequest{Id: "c2", ExecId: "x2", Signal: sig})
	}
	return reqs
}

func fuzzUpdateSeeds() []proto.Message {
	return []proto.Message{
		&taskapi.UpdateTaskRequest{Id: "c2", Resources: fuzzAny(fuzzResourcesURL, `{"cpu":{"shares":2}}`)},
		&taskapi.UpdateTaskRequest{Id: "c2", Resources: fuzzAny(fuzzResourcesURL, "not json")},
		&taskapi.UpdateTaskRequest{Id: "c2", Resources: fuzzAny(fuzzResourcesURL, "")},
		&taskapi.UpdateTaskRequest{Id: "c2"},
		&taskapi.UpdateTaskRequest{Id: "c1", Resources: fuzzAny(fuzzResourcesURL, `{}`), Annotations: map[string]string{"k": "v"}},
	}
}

func fuzzCheckpointSeeds() []proto.Message {
	opts := func(o *runcopts.CheckpointOptions) *gogotypes.Any { a, _ := marshalAny(o); return a }
	return []proto.Message{
		&taskapi.CheckpointTaskRequest{Id: "c2", Path: "/sandbox/ckpt"},
		&taskapi.CheckpointTaskRequest{Id: "c2", Options: opts(&runcopts.CheckpointOptions{Exit: true, ImagePath: "/sandbox/ckpt",
			WorkPath: "/sandbox/ckpt/work", EmptyNamespaces: []string{"network"}})},
		&taskapi.CheckpointTaskRequest{Id: "c2", Path: "/sandbox/ckpt", Options: fuzzAny("example.com/Nope", "x")},
		&taskapi.CheckpointTaskRequest{Id: "c2", Path: "/sandbox/ckpt", Options: fuzzAny("containerd.runc.v1.CheckpointOptions", "\xff")},
		&taskapi.CheckpointTaskRequest{Id: "c2"},
		&taskapi.CheckpointTaskRequest{Id: "c1", Path: "/sandbox/ckpt"},
	}
}
