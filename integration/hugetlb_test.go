package integration

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	unifiedControllers = "/sys/fs/cgroup/unified/cgroup.controllers"
	hugetlbV1          = "/sys/fs/cgroup/hugetlb"
)

// freeUnifiedHierarchy lets crun run on this machine kind (ENVIRONMENT.md):
// crun 1.8 refuses a hybrid host whose cgroup2 mount holds a controller
// ("cgroups in hybrid mode not supported"), and here the unified hierarchy
// holds hugetlb. Mounting hugetlb as a cgroup v1 hierarchy moves it out of
// cgroup2. It is idempotent, says on stderr when it mounted, and never
// unmounts: once containers have used the hierarchy it lives on unmounted,
// and containerd's cgroup library then fails ("cannot find cgroup mount
// destination").
func freeUnifiedHierarchy() error {
	b, err := os.ReadFile(unifiedControllers)
	if os.IsNotExist(err) {
		return nil // no hybrid cgroup2 mount: nothing to free
	}
	if err != nil {
		return err
	}
	if !strings.Contains(" "+strings.Join(strings.Fields(string(b)), " ")+" ", " hugetlb ") {
		return nil
	}
	mounted, err := isCgroupMount(hugetlbV1)
	if err != nil || mounted {
		return err
	}
	if err := os.MkdirAll(hugetlbV1, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("cgroup", hugetlbV1, "cgroup", 0, "hugetlb"); err != nil {
		return fmt.Errorf("mount -t cgroup -o hugetlb cgroup %s: %w", hugetlbV1, err)
	}
	fmt.Fprintf(os.Stderr, "integration: mounted the hugetlb controller as a cgroup v1 hierarchy on %s, so that crun runs here; it stays mounted (ENVIRONMENT.md)\n", hugetlbV1)
	return nil
}

// isCgroupMount reports whether dir is the mount point of a cgroup (v1)
// file system, from /proc/self/mountinfo.
func isCgroupMount(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close() // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if len(fields) > 4 && sep > 0 && sep+1 < len(fields) && fields[4] == dir && fields[sep+1] == "cgroup" {
			return true, nil
		}
	}
	return false, sc.Err()
}
