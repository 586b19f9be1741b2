// Command escape is a test image that probes the limits of its container and
// prints one JSON line per probe, for hardening tests. Every probe is
// harmless to the host: it only tries what a hardened container must refuse
// (writing its root file system, mounting, gaining privileges, more
// processes or memory than allowed, egress) and reports what happened.
//
// Arguments name the probes to run, in order (default: all but memory, which
// may get the container OOM-killed): rootfs, mount, caps, nonewprivs, pids,
// egress, vsock, ipv6, memory. Limits: PIDS_TRY (default 200), MEM_TRY_MB (default 256),
// EGRESS_ADDR (host:port; probe skipped if empty).
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type result struct {
	Probe   string `json:"probe"`
	Allowed bool   `json:"allowed"` // true: the container could do it
	Detail  string `json:"detail"`
}

func report(probe string, allowed bool, detail string) {
	b, _ := json.Marshal(result{probe, allowed, detail})
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" { // child of the pids probe
		time.Sleep(time.Minute)
		return
	}
	probes := os.Args[1:]
	if len(probes) == 0 {
		probes = []string{"rootfs", "mount", "caps", "nonewprivs", "pids", "egress", "vsock", "ipv6"}
	}
	for _, p := range probes {
		switch p {
		case "rootfs":
			err := os.WriteFile("/escape-was-here", []byte("x"), 0o644)
			report(p, err == nil, errText(err))
		case "mount":
			os.MkdirAll("/tmp/m", 0o755)
			err := syscall.Mount("tmpfs", "/tmp/m", "tmpfs", 0, "")
			if err == nil {
				syscall.Unmount("/tmp/m", 0)
			}
			report(p, err == nil, errText(err))
		case "caps":
			eff := statusField("CapEff")
			report(p, strings.Trim(eff, "0") != "", "CapEff="+eff)
		case "nonewprivs":
			v := statusField("NoNewPrivs")
			report(p, v != "1", "NoNewPrivs="+v)
		case "pids":
			want := envInt("PIDS_TRY", 200)
			var kids []*exec.Cmd
			var err error
			for len(kids) < want {
				c := exec.Command("/proc/self/exe", "sleep")
				if err = c.Start(); err != nil {
					break
				}
				kids = append(kids, c)
			}
			for _, c := range kids {
				c.Process.Kill()
				c.Wait()
			}
			report(p, len(kids) == want, fmt.Sprintf("started %d of %d processes; %s", len(kids), want, errText(err)))
		case "egress":
			addr := os.Getenv("EGRESS_ADDR")
			if addr == "" {
				report(p, false, "skipped: EGRESS_ADDR not set")
				continue
			}
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err == nil {
				c.Close()
			}
			report(p, err == nil, errText(err))
		case "vsock": // the parent's vsock listener is one socket(2) away
			fd, err := syscall.Socket(40 /* AF_VSOCK */, syscall.SOCK_STREAM, 0)
			if err == nil {
				syscall.Close(fd)
			}
			report(p, err == nil, errText(err))
		case "ipv6": // any IPv6 address, even link-local, is a way around IPv4 rules
			var have []string
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil {
					have = append(have, n.String())
				}
			}
			report(p, len(have) > 0, "IPv6 addresses: "+strings.Join(have, " "))
		case "memory":
			want := envInt("MEM_TRY_MB", 256)
			var hold [][]byte
			for i := 0; i < want/16; i++ {
				b := make([]byte, 16<<20)
				for j := range b {
					if j%4096 == 0 {
						b[j] = 1
					}
				}
				hold = append(hold, b)
				fmt.Printf("{\"probe\":\"memory-progress\",\"mb\":%d}\n", (i+1)*16)
			}
			report(p, true, fmt.Sprintf("allocated %d MB", len(hold)*16))
		default:
			report(p, false, "unknown probe")
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func statusField(name string) string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
