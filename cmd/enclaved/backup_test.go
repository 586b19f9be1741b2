package main

import (
	"cmp"
	"context"
	"crypto/sha512"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
)

// split is a key store, a parent and an enclave as separate processes
// linked over TCP on 127.0.0.1. The enclave's data dir is its RAM disk:
// wiped before every start. The dev root stands for the Nitro hardware
// and stays.
type split struct {
	t          *testing.T
	dir        string
	parentAddr string
	public     string // the parent's forwarded HTTP port
	keystore   string // npub
	enclave    *process
	args       []string
}

func newSplit(t *testing.T, extra ...string) *split {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	testenv.Docker(t)
	s := &split{t: t, dir: t.TempDir()}
	root := filepath.Join(s.dir, "hardware")
	h := sha512.Sum384([]byte("root"))
	if _, err := attest.LoadOrCreateDev(root, h[:], time.Now); err != nil {
		t.Fatal(err)
	}
	ks := startProcessWith(t, &syscall.SysProcAttr{}, "keystore up", nil, "keystore", "-data-dir", filepath.Join(s.dir, "keystore"),
		"-relay", relay.URL, "-set", "keystore.dev_root="+filepath.Join(root, "dev-root.pem"))
	s.keystore = ks.npub
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.parentAddr = l.Addr().String()
	l.Close()
	if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.public = l.Addr().String()
	l.Close()
	startProcessWith(t, &syscall.SysProcAttr{}, "parent:", nil, "parent", "-data-dir", filepath.Join(s.dir, "parent"), "-listen", s.parentAddr,
		"-forward", s.public+"=443")
	registry := strings.SplitN(imgs.Hello.Ref, "/", 2)[0]
	n := ln.Operator
	s.args = append([]string{"enclave", "-data-dir", filepath.Join(s.dir, "enclave"), "-parent", s.parentAddr,
		"-set", "nostr.relays=" + relay.URL, "-set", "lightning.grpc=" + n.GRPCAddr, "-set", "lightning.tls_cert=" + n.TLSCertPath(),
		"-set", "lightning.macaroon=" + n.MacaroonPath("invoice"), "-set", "enclave.egress=" + registry,
		"-set", "backup.mode=keystore", "-set", "keystore.pubkey=" + s.keystore, "-set", "attest.dev_root_dir=" + root,
		"-set", "backup.delay=100ms", "-set", "http.public_url=http://" + s.public}, extra...)
	return s
}

// boot wipes the enclave's data dir and starts it.
func (s *split) boot() *process {
	s.t.Helper()
	if err := os.RemoveAll(filepath.Join(s.dir, "enclave")); err != nil {
		s.t.Fatal(err)
	}
	s.enclave = startProcessWith(s.t, &syscall.SysProcAttr{}, "try:", nil, s.args...)
	return s.enclave
}

// kill SIGKILLs the enclave.
func (s *split) kill() {
	s.enclave.cmd.Process.Kill()
	<-s.enclave.exited
}

func (s *split) blob(name string) string { return filepath.Join(s.dir, "parent", "blobs", name) }

// An enclave killed and started again on an empty disk and an empty
// container engine comes back as the same instance with its ledger and its
// container, whose volume holds what it wrote, from the parent's backup
// and the key store's keys; a stopped container comes back stopped and
// starts with its data; when the parent alters the backup, the enclave
// refuses to start and says why.
func TestRestartFromBackup(t *testing.T) {
	// Until the kill, every backup copies the running container's volume
	// (by default once in 10 min), so the one before the kill holds it.
	s := newSplit(t, "-set", "backup.volume_interval=0s")
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	dc := testenv.Docker(t)
	first := s.boot()
	self := npubHex(t, first.npub)
	t.Cleanup(func() { removeInstance(t, self) })
	c := testenv.NewClient(t, first.relay)
	c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=kept")
	if _, err := ln.Payer.Pay(context.Background(), testenv.Invoice(t, c.Await(t, self, "Quote").Text)); err != nil {
		t.Fatal(err)
	}
	c.Await(t, self, "kept is running")
	id := containerID(t, filepath.Join(s.dir, "enclave"), "kept")
	// hello counts its starts in its /data volume. An invoice is handed
	// out only after a backup, so once the top-up invoice is here, a
	// backup holds the volume as it is now.
	testenv.WaitHTTP(t, dc, deployer.RuntimeName(id), 8080, "(start 1)")
	c.Send(t, "nip17", self, "topup kept 100")
	c.Await(t, self, "Invoice for 100 sats")

	s.kill()
	removeInstance(t, self) // the enclave's engine is gone with it
	again := s.boot()
	if again.npub != first.npub {
		t.Fatalf("restarted as %s, was %s", again.npub, first.npub)
	}
	c.Send(t, "nip17", self, "status")
	c.Await(t, self, "kept: running")
	if got := containerID(t, filepath.Join(s.dir, "enclave"), "kept"); got != id {
		t.Errorf("restored record %s, want %s", got, id)
	}
	if credits := countCredits(t, filepath.Join(s.dir, "enclave"), id); credits != 1 {
		t.Errorf("%d credits after the restore, want 1", credits)
	}
	testenv.WaitHTTP(t, dc, deployer.RuntimeName(id), 8080, "(start 2)")

	// From here on the default volume interval: a stopped container's
	// volume is copied once after it stopped.
	s.args = s.args[:len(s.args)-2]
	// Stopped, then a graceful restart (which takes a last backup).
	c.Send(t, "nip17", self, "stop kept")
	c.Await(t, self, "kept is stopped")
	again.stop(t)
	removeInstance(t, self)
	again = s.boot()
	c.Send(t, "nip17", self, "status")
	c.Await(t, self, "kept: stopped")
	c.Send(t, "nip17", self, "start kept")
	c.Await(t, self, "kept is running")
	testenv.WaitHTTP(t, dc, deployer.RuntimeName(id), 8080, "(start 3)")

	// A graceful stop takes a last backup; the parent then alters it.
	again.stop(t)
	var newest string
	for _, name := range []string{"state-a", "state-b"} {
		if fi, err := os.Stat(s.blob(name)); err == nil && (newest == "" || fi.ModTime().After(mustStat(t, s.blob(newest)).ModTime())) {
			newest = name
		}
	}
	b, err := os.ReadFile(s.blob(newest))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 1
	os.WriteFile(s.blob(newest), b, 0o600)
	os.RemoveAll(filepath.Join(s.dir, "enclave"))
	p := startRefused(t, s.args...)
	if out := p.stderr.String(); !strings.Contains(out, "backup refused: blob "+newest+" does not match checkpoint") || !strings.Contains(out, "backup.accept_loss") {
		t.Errorf("the altered backup was not refused loudly:\n%s", out)
	}
}

func mustStat(t *testing.T, path string) os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// startRefused runs the binary and waits for it to exit with an error.
func startRefused(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{stderr: &testenv.SyncBuffer{}}
	cmd := exec.CommandContext(t.Context(), binary(t), args...)
	cmd.Stderr = p.stderr
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err == nil {
		t.Fatalf("enclaved %s started; want a refusal", args[0])
	}
	return p
}

// payment is an invoice the test paid.
type payment struct {
	hash, container, purpose string
}

// The instance is SIGKILLed at a random moment of a deploy, a top-up, a
// zap, an owner's stop or start, or the metering that runs at every start,
// KILLS times (50 by default), and each time starts again on an empty disk
// and an empty container engine from the parent's backup. After every
// restart each paid invoice is credited exactly once, nothing else is
// credited, every container paid for runs unless its owner was told it
// stopped, and one told it stopped stays stopped.
func TestRandomKills(t *testing.T) {
	kills := 50
	if v := os.Getenv("ENCLAVED_KILLS"); v != "" {
		fmt.Sscan(v, &kills)
	}
	s := newSplit(t, "-set", "nostr.commands_per_minute=1000", "-set", "http.invoices_per_client_per_minute=100000", "-set", "pricing.msat_per_unit_hour=360000")
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	var paid []payment
	var deployed []string // containers whose deploy was paid
	// want is each paid container's state as its owner was last told:
	// "running", "stopped", or "" when a kill cut the answer off.
	want := map[string]string{}
	var mu sync.Mutex
	p := s.boot()
	self := npubHex(t, p.npub)
	t.Cleanup(func() { removeInstance(t, self) })
	c := testenv.NewClient(t, p.relay)
	pay := func(bolt11, container, purpose string) {
		res, err := ln.Payer.Pay(context.Background(), bolt11)
		if err != nil {
			return
		}
		mu.Lock()
		paid = append(paid, payment{res.PaymentHash, container, purpose})
		if purpose == "deploy" {
			deployed = append(deployed, container)
			want[container] = "running"
		}
		mu.Unlock()
	}
	// answer sends a command and returns the reply, if one comes within
	// 5 s.
	answer := func(text string) string {
		id := c.Send(t, "nip17", self, text)
		deadline := time.After(5 * time.Second)
		for {
			select {
			case r := <-c.Replies():
				if r.RefersTo(id) {
					return r.Text
				}
			case <-deadline:
				return ""
			}
		}
	}
	// ask returns the invoice in the reply to a command, if any.
	ask := func(text string) string {
		r := answer(text)
		if i := strings.Index(r, "lnbcrt"); i >= 0 {
			return strings.Fields(r[i:])[0]
		}
		return ""
	}
	flows := map[string]int{}
	for i := range kills {
		mu.Lock()
		names := append([]string(nil), deployed...)
		mu.Unlock()
		flow := "deploy"
		if len(names) >= 4 || (len(names) > 0 && rng.IntN(2) == 0) {
			flow = []string{"topup", "zap", "halt"}[rng.IntN(3)]
		}
		flows[flow]++
		done := make(chan struct{})
		go func() {
			defer close(done)
			switch flow {
			case "deploy":
				name := fmt.Sprintf("k%02d", i)
				if inv := ask("deploy " + imgs.Hello.Ref + " name=" + name); inv != "" {
					pay(inv, name, "deploy")
				}
			case "topup":
				name := names[rng.IntN(len(names))]
				if inv := ask(fmt.Sprintf("topup %s %d", name, 10+rng.IntN(90))); inv != "" {
					pay(inv, name, "topup")
				}
			case "halt":
				name := names[rng.IntN(len(names))]
				mu.Lock()
				verb := "stop"
				if want[name] != "running" {
					verb = "start"
				}
				want[name] = "" // unknown until the answer comes
				mu.Unlock()
				r := answer(verb + " " + name)
				mu.Lock()
				switch {
				case strings.Contains(r, name+" is stopped"):
					want[name] = "stopped"
				case strings.Contains(r, name+" is running"), strings.Contains(r, name+" is already running"):
					want[name] = "running"
				}
				mu.Unlock()
			case "zap":
				name := names[rng.IntN(len(names))]
				pr, err := testenv.TryPayRequest("http://" + s.public + "/.well-known/lnurlp/" + name)
				if err != nil {
					return
				}
				var pubkey string
				openRO(t, filepath.Join(s.dir, "enclave")).QueryRow(`SELECT pubkey FROM containers WHERE name = ?`, name).Scan(&pubkey)
				if inv, err := testenv.TryZapInvoice(pr.Callback, pubkey, p.relay, int64(1000*(1+rng.IntN(50)))); err == nil {
					pay(inv, name, "zap")
				}
			}
		}()
		// The kill lands anywhere from before the command is read to
		// after the payment settled.
		time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond)
		s.kill()
		<-done
		removeInstance(t, self) // the enclave's engine is gone with it
		p = s.boot()
		if npubHex(t, p.npub) != self {
			t.Fatalf("kill %d: restarted as another instance %s", i+1, p.npub)
		}
		mu.Lock()
		payments := append([]payment(nil), paid...)
		states := maps.Clone(want)
		mu.Unlock()
		checkLedger(t, s, i+1, payments, states)
	}
	t.Logf("%d kills: flows %v, %d payments, %d containers, last told %v", kills, flows, len(paid), len(deployed), want)
	if flows["deploy"] == 0 || flows["topup"] == 0 || flows["zap"] == 0 || flows["halt"] == 0 || len(paid) < kills/4 {
		t.Errorf("too few flows completed to mean much: %v, %d payments", flows, len(paid))
	}
}

// checkLedger waits (a bound, not a timing) until the restarted
// instance's ledger holds exactly one credit per payment and nothing
// else, and every paid container is as its owner was last told (running
// or stopped; either, if the answer was cut off), in the records and in
// Docker alike.
func checkLedger(t *testing.T, s *split, kill int, paid []payment, want map[string]string) {
	t.Helper()
	dir := filepath.Join(s.dir, "enclave")
	var last string
	ok := func() bool {
		db := openRO(t, dir)
		counts := map[string]int{}
		rows, err := db.Query(`SELECT payment_hash FROM ledger WHERE kind = 'credit'`)
		if err != nil {
			last = err.Error()
			return false
		}
		total := 0
		for rows.Next() {
			var h string
			rows.Scan(&h)
			counts[h]++
			total++
		}
		rows.Close()
		for _, p := range paid {
			if counts[p.hash] != 1 {
				last = fmt.Sprintf("%s payment %s… to %s credited %d times", p.purpose, p.hash[:12], p.container, counts[p.hash])
				return false
			}
		}
		if total != len(paid) {
			last = fmt.Sprintf("%d credits for %d payments", total, len(paid))
			return false
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			var state, dockerID string
			if err := db.QueryRow(`SELECT state, docker_id FROM containers WHERE name = ?`, name).Scan(&state, &dockerID); err != nil ||
				(want[name] != "" && state != want[name]) || (state != "running" && state != "stopped") {
				last = fmt.Sprintf("%s is %q (%v), want %q", name, state, err, cmp.Or(want[name], "running or stopped"))
				return false
			}
			info, err := testenv.Docker(t).ContainerInspect(context.Background(), dockerID)
			if err != nil || info.State.Running != (state == "running") {
				last = fmt.Sprintf("%s is %s but its container %s is not (%v)", name, state, dockerID, err)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after kill %d: %s; enclave stderr:\n%s", kill, last, s.enclave.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And the ledger audits itself: every balance, payment and state.
	if out, err := exec.Command(binary(t), "audit", "-data-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("after kill %d: audit: %v\n%s", kill, err, out)
	}
}

// removeInstance removes every container of an instance, with its network.
func removeInstance(t *testing.T, instance string) {
	list, err := testenv.Docker(t).ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", deployer.LabelInstance+"="+instance))})
	if err != nil {
		t.Error(err)
		return
	}
	for _, c := range list {
		removeAll(t, c.Labels[deployer.LabelID])
	}
}
