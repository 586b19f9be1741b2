package egressproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/enclaved/enclaved/egress"
)

// Firewall installs the rules that send a container bridge's traffic to
// its proxy, with iptables.
type Firewall struct {
	// Command is the iptables binary (default "iptables").
	Command string
}

// rules are the rules for one bridge: every TCP connection from it goes
// to the proxy's port, whatever its destination (the enclave's own
// listeners included); nothing else leaves it.
func rules(iface string, port int) [][]string {
	p := strconv.Itoa(port)
	return [][]string{
		{"-t", "nat", "PREROUTING", "-i", iface, "-p", "tcp", "-j", "REDIRECT", "--to-ports", p},
		{"-t", "filter", "FORWARD", "-i", iface, "-j", "DROP"},
		{"-t", "filter", "INPUT", "-i", iface, "!", "-p", "tcp", "-j", "DROP"},
	}
}

func (f Firewall) run(ctx context.Context, op string, rule []string) error {
	cmd := f.Command
	if cmd == "" {
		cmd = "iptables"
	}
	// rule is -t TABLE CHAIN spec...; the operation goes before the chain.
	args := append([]string{"-w", rule[0], rule[1], op, rule[2]}, rule[3:]...)
	out, err := exec.CommandContext(ctx, cmd, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", cmd, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Redirect installs the rules of iface (once: present rules are kept).
func (f Firewall) Redirect(ctx context.Context, iface string, port int) error {
	for _, r := range rules(iface, port) {
		if f.run(ctx, "-C", r) == nil {
			continue
		}
		if err := f.run(ctx, "-I", r); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the rules of iface.
func (f Firewall) Remove(ctx context.Context, iface string, port int) error {
	var first error
	for _, r := range rules(iface, port) {
		for f.run(ctx, "-C", r) == nil {
			if err := f.run(ctx, "-D", r); err != nil {
				if first == nil {
					first = err
				}
				break
			}
		}
	}
	return first
}

// Manager runs the proxies of the instance's containers.
type Manager struct {
	Dial DialFunc
	Log  *slog.Logger
	// Firewall redirects a bridge to its proxy; nil leaves the firewall
	// alone (the proxy then serves only connections made to it directly).
	Firewall *Firewall
	// MaxConns bounds each container's connections open at once
	// (Proxy.MaxConns; default DefaultMaxConns).
	MaxConns int

	mu      sync.Mutex
	open    map[string]*confined
	refused map[string]uint64 // by reason, over every container
}

// Refusals counts the connections refused so far over every container,
// by reason (each of RefusalReasons, zeros too).
func (m *Manager) Refusals() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]uint64, len(RefusalReasons))
	for _, r := range RefusalReasons {
		out[r] = m.refused[r]
	}
	return out
}

func (m *Manager) refusal(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		m.refused = map[string]uint64{}
	}
	m.refused[reason]++
}

type confined struct {
	cancel context.CancelFunc
	iface  string
	port   int
	done   chan struct{}
}

// Confine starts name's proxy on the bridge's gateway address and
// redirects the bridge to it. Confining a confined container does nothing.
func (m *Manager) Confine(ctx context.Context, name, iface string, gateway netip.Addr, plan egress.Plan) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.open == nil {
		m.open = map[string]*confined{}
	}
	if _, ok := m.open[name]; ok {
		return nil
	}
	l, err := net.Listen("tcp", netip.AddrPortFrom(gateway, 0).String())
	if err != nil {
		return fmt.Errorf("egress proxy for %s: %w", name, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if m.Firewall != nil {
		if err := m.Firewall.Redirect(ctx, iface, port); err != nil {
			l.Close()
			return fmt.Errorf("egress proxy for %s: %w", name, err)
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	c := &confined{cancel: cancel, iface: iface, port: port, done: make(chan struct{})}
	m.open[name] = c
	p := &Proxy{Container: name, Plan: plan, Dial: m.Dial, Log: m.Log, MaxConns: m.MaxConns, Refused: m.refusal}
	go func() {
		defer close(c.done)
		if err := p.Serve(sctx, l); err != nil && m.Log != nil {
			m.Log.Warn("egress proxy stopped", "container", name, "err", err)
		}
	}()
	return nil
}

// Port is the port of name's proxy (0 if it has none).
func (m *Manager) Port(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.open[name]; ok {
		return c.port
	}
	return 0
}

// Release stops name's proxy and removes its rules.
func (m *Manager) Release(ctx context.Context, name string) error {
	m.mu.Lock()
	c, ok := m.open[name]
	delete(m.open, name)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	c.cancel()
	<-c.done
	if m.Firewall != nil {
		return m.Firewall.Remove(ctx, c.iface, c.port)
	}
	return nil
}

// Close releases every proxy.
func (m *Manager) Close(ctx context.Context) {
	m.mu.Lock()
	names := make([]string, 0, len(m.open))
	for n := range m.open {
		names = append(names, n)
	}
	m.mu.Unlock()
	for _, n := range names {
		if err := m.Release(ctx, n); err != nil && m.Log != nil {
			m.Log.Warn("egress proxy rules left", "container", n, "err", err)
		}
	}
}
