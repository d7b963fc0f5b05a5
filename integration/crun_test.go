package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCrun runs the core scenarios, a TTY run, a TTY exec and an OOM kill
// with crun for real, selected by runtime options (`ctr run
// --runtime-config-path`, BinaryName = "crun"), on containerd 1.6. crun
// runs on this machine kind only once the suite's setup has moved hugetlb
// out of the cgroup2 mount (freeUnifiedHierarchy).
//
// On containerd 2.4.2 Debian's crun 1.8.1 cannot run a container at all:
// ctr 2.4.2 writes runtime-spec 1.2.1 bundles ("ociVersion": "1.2.1"),
// which crun 1.8 refuses ("unknown version specified", whichever shim runs
// it). There the test checks that crun was selected and its error reached
// ctr as containerd's shim words it, and that nothing was left behind.
func TestCrun(t *testing.T) {
	crun, err := exec.LookPath("crun")
	if err != nil {
		t.Fatalf("crun is not installed (scripts/deps.sh installs it): %v", err)
	}
	if !strings.HasSuffix(suite.runtime, ".lean.v2") {
		t.Skipf("ctr passes --runtime-config-path only to non-runc runtimes; %s is not leanshim", suite.runtime)
	}
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "crun.toml")
	if err := os.WriteFile(cfg, []byte("BinaryName = \"crun\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scenarios := append(coreScenarios[:len(coreScenarios):len(coreScenarios)],
		scenario{"the container is crun's", func(t *testing.T, d *daemon) { scenarioIsCrun(t, d, crun) }},
		scenario{"tty run", scenarioTTYRun},
		scenario{"tty exec", scenarioTTYExec},
		scenario{"oom before exit", scenarioOOM},
	)
	for _, fl := range []flavor{defaultFlavor(), containerd24Flavor(t)} {
		fl.name += "-crun"
		fl.runFlags = []string{"--runtime-config-path", cfg}
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			d := startContainerd(t, withFlavor(fl), withDebug())
			if fl.binDir != "" { // containerd 2.4.2
				crunRefusesSpec12(t, d)
				return
			}
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					sc.run(t, d)
				})
			}
		})
	}
}

// scenarioIsCrun checks that a detached container is in crun's state, not
// runc's, and that exec works in it.
func scenarioIsCrun(t *testing.T, d *daemon, crun string) {
	id := d.newID("iscrun")
	removeOnCleanup(t, d, id)
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d with crun: %v", r)
	}
	root := filepath.Join(runcRoot, d.ns)
	out, err := exec.Command(crun, "--root", root, "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), id) {
		t.Fatalf("crun list does not show %s: %v\n%s", id, err, out)
	}
	if r := d.ctr(t, "task", "exec", "--exec-id", "e1", id, "/bin/echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
		t.Fatalf("exec through crun: %v", r)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

// crunRefusesSpec12 checks the one thing crun 1.8 does under containerd
// 2.4.2 (see TestCrun): refuse the bundle's spec version, an error that must
// reach ctr as a create failure and leave nothing behind.
func crunRefusesSpec12(t *testing.T, d *daemon) {
	id := d.newID("crun12")
	r := d.run(t, []string{"--rm"}, id, "/bin/echo", "hello")
	if r.code == 0 || !strings.Contains(r.stderr, "OCI runtime create failed: unknown version specified") {
		t.Fatalf("crun 1.8 under containerd 2.4.2: want its \"unknown version specified\" as a create failure; got %v", r)
	}
	t.Logf("crun 1.8.1 refuses containerd 2.4.2's runtime-spec 1.2.1 bundle, as expected: %s", strings.TrimSpace(r.stderr))
	d.ctr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}
