// Command pause is the sandbox ("pause") container of the local node's pods: it holds the pod's
// namespaces open, reaps the zombies of processes that end up as its children (it is PID 1 of
// the pod when the pod shares its process namespace), and exits 0 on SIGINT or SIGTERM.
//
// containerd would otherwise pull registry.k8s.io/pause, and no registry can be reached, so the
// node pins its sandbox image to this one (images/pause/Containerfile). devenv/images.py builds it
// static (CGO_ENABLED=0) into a cache directory outside the repository; the binary is never
// committed.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("healthnav pause 1.0")
		return
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reapChildren()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %v, shutting down\n", sig)
		os.Exit(0)
	}
}

// reapChildren waits for every child that has exited, without blocking: one SIGCHLD can stand for
// several exits, since pending signals of one kind coalesce.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
