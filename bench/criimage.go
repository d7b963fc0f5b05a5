package main

// The pods bench's two images, made from local files only (no registry):
// a pause image and a busybox app image, each a docker-archive tarball
// (manifest.json, an image config, one uncompressed layer), which
// `ctr images import` reads.
//
// The pause binary is what Kubernetes' pause is: a few lines of C built
// `gcc -Os -static` (build/pause/linux/pause.c in kubernetes/kubernetes),
// so the pause process of (b) and (c) costs what it costs on a real node.
// A Go pause would cost about a MiB more and flatter the shim mode.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

const (
	// The made-up registry keeps any pull from succeeding.
	pauseImageRef = "leanshim.bench/pause:1"
	appImageRef   = "leanshim.bench/busybox:1"
)

// pauseSource sleeps until SIGINT or SIGTERM, reaping any child that is
// re-parented to it, as Kubernetes' pause does.
const pauseSource = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void down(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
	struct sigaction sa = {0};
	sa.sa_handler = down;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
	for (;;) pause();
}
`

// criImages are the paths of the image tarballs.
type criImages struct {
	pause, app string
	pauseSize  int64 // bytes of the pause binary
}

// buildCRIImages builds the pause binary with gcc and writes both tarballs
// in dir; rootfs is the busybox root of buildRootfs.
func buildCRIImages(dir, rootfs string) (criImages, error) {
	pauseRoot := filepath.Join(dir, "pause-rootfs")
	if err := os.MkdirAll(pauseRoot, 0o755); err != nil {
		return criImages{}, err
	}
	src := filepath.Join(dir, "pause.c")
	if err := os.WriteFile(src, []byte(pauseSource), 0o644); err != nil {
		return criImages{}, err
	}
	bin := filepath.Join(pauseRoot, "pause")
	if out, err := exec.Command("gcc", "-Os", "-Wall", "-static", "-s", "-o", bin, src).CombinedOutput(); err != nil {
		return criImages{}, fmt.Errorf("build the pause binary (apt-get install gcc libc6-dev): %w\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return criImages{}, err
	}
	imgs := criImages{pause: filepath.Join(dir, "pause.tar"), app: filepath.Join(dir, "busybox.tar"), pauseSize: fi.Size()}
	if err := writeImageArchive(imgs.pause, pauseImageRef, pauseRoot, imageConfig{Entrypoint: []string{"/pause"}}); err != nil {
		return imgs, fmt.Errorf("pause image: %w", err)
	}
	app := imageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}
	if err := writeImageArchive(imgs.app, appImageRef, rootfs, app); err != nil {
		return imgs, fmt.Errorf("busybox image: %w", err)
	}
	return imgs, nil
}

// imageConfig is the "config" object of an image config.
type imageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
}

// writeImageArchive writes at path a docker-archive of the one-layer image
// ref whose layer is the tree at root.
func writeImageArchive(path, ref, root string, cfg imageConfig) error {
	var layer bytes.Buffer
	if err := tarTree(&layer, root); err != nil {
		return err
	}
	diffID := sha256.Sum256(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(diffID[:]) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{ref}, "Layers": []string{layerName}}})
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	entries := []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer.Bytes()}, {"manifest.json", manifest}}
	for _, e := range entries {
		if dir := filepath.Dir(e.name); dir != "." {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, archive.Bytes(), 0o644)
}

// tarTree writes the tree at root (dirs, regular files, symlinks) to w,
// paths relative to root, everything owned by root.
func tarTree(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil || !info.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close() // read-only
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
