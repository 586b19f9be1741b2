package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/internal/devrelay"
	"github.com/enclaved/enclaved/internal/testenv"
)

// The main loop and a zap, with the instance split in two processes that
// talk only over the link: `enclaved parent` on this machine's network,
// `enclaved enclave` in a network namespace of its own (no interface but a
// downed loopback), reaching the parent over a unix socket. The relay,
// LND and the registry listen on 127.0.0.1 here, which the enclave can
// reach only through the parent's egress; renters reach its HTTP API only
// through the parent's forwarded port.
func TestSplitParentAndEnclave(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	testenv.Docker(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "link.sock")
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := pl.Addr().String()
	pl.Close()
	// The operator's metrics: the parent listens, the enclave serves them
	// on the ingress port of the same number.
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ml.Addr().String()
	ml.Close()

	// The operator gives the parent a release signature of the PCRs the
	// enclave attests (the dev attestor derives them from its binary),
	// which the enclave embeds; a well-signed release of other PCRs and a
	// broken build signature, which it skips: the parent is untrusted.
	b, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384(b)
	own := attest.DevPCRs(sum[:])
	sign := func(pcr0, pcr1, pcr2 string) string {
		var rel bytes.Buffer
		if err := run(context.Background(), []string{"release", "sign", "-version", "0.0.1", "-pcr0", pcr0, "-pcr1", pcr1, "-pcr2", pcr2},
			&rel, &bytes.Buffer{}, []string{signingKeyEnv + "=" + nostr.GeneratePrivateKey()}); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "release-"+pcr2[:8]+".json")
		os.WriteFile(f, rel.Bytes(), 0o600)
		return f
	}
	pcr := hex.EncodeToString(own[0])
	other := strings.Repeat("ab", 48)
	relFile := sign(pcr, hex.EncodeToString(own[1]), hex.EncodeToString(own[2]))
	otherFile := sign(pcr, hex.EncodeToString(own[1]), other)
	badFile := filepath.Join(dir, "build.json")
	os.WriteFile(badFile, []byte(`{"kind":23794,"sig":"forged"}`), 0o600)
	startProcessWith(t, &syscall.SysProcAttr{}, "parent:", nil, "parent", "-data-dir", filepath.Join(dir, "parent"),
		"-listen", "unix:"+sock, "-forward", public+"=443", "-set", "instance.releases="+otherFile+","+relFile, "-set", "instance.build_signature="+badFile,
		"-set", "metrics.listen="+metricsAddr)
	registry := strings.SplitN(imgs.Hello.Ref, "/", 2)[0]
	n := ln.Operator
	p := startProcessWith(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}, "try:", nil, "enclave",
		"-data-dir", filepath.Join(dir, "enclave"), "-parent", "unix:"+sock,
		"-set", "nostr.relays="+relay.URL, "-set", "lightning.grpc="+n.GRPCAddr, "-set", "lightning.tls_cert="+n.TLSCertPath(),
		"-set", "lightning.macaroon="+n.MacaroonPath("invoice"), "-set", "http.public_url=https://"+public, "-set", "http.tls=dev",
		"-set", "enclave.egress="+registry, "-set", "metrics.listen="+metricsAddr)
	self := npubHex(t, p.npub)
	theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.cmd.Process.Pid))
	ours, _ := os.Readlink("/proc/self/ns/net")
	if theirs == "" || theirs == ours {
		t.Fatalf("the enclave shares our network namespace (%q)", theirs)
	}

	ann := testenv.Next(t, testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{13793}, Authors: []string{self}}), "announcement")
	var releases []string
	for _, tg := range ann.Tags {
		if len(tg) > 1 && tg[0] == "release" {
			releases = append(releases, tg[1])
		}
	}
	if len(releases) != 1 || !strings.Contains(releases[0], hex.EncodeToString(own[2])) {
		t.Errorf("the announcement embeds %d releases, want the one of the enclave's own PCRs: %v", len(releases), releases)
	}
	for _, tg := range ann.Tags {
		if len(tg) > 2 && tg[0] == "egress" && tg[1] == "instance" {
			if got := strings.Join(tg[2:], " "); !strings.HasPrefix(got, "enforced "+registry) {
				t.Errorf("instance egress tag says %q", got)
			}
		}
	}
	if ann.Tags.Find("build") != nil {
		t.Errorf("the forged build signature was embedded")
	}

	// Deploy, pay, run: by NIP-17 through the relay. The renter's DM
	// relays (kind 10050) are outside the enclave's egress allowlist: the
	// replies come on the instance's relay, where the renter reached it.
	c := testenv.NewClient(t, relay.URL)
	elsewhere, err := devrelay.Start("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { elsewhere.Close() })
	inbox := nostr.Event{Kind: nostr.KindDMRelayList, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", elsewhere.URL}}}
	inbox.Sign(c.SK)
	c.Publish(t, inbox, relay.URL)
	c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=split")
	if _, err := ln.Payer.Pay(context.Background(), testenv.Invoice(t, c.Await(t, self, "Quote").Text)); err != nil {
		t.Fatal(err)
	}
	c.Await(t, self, "split is running")
	id := containerID(t, filepath.Join(dir, "enclave"), "split")
	t.Cleanup(func() { removeAll(t, id) })

	// A zap through the forwarded public port, over TLS that terminates
	// in the enclave: the client trusts only the enclave's dev CA.
	pem, err := os.ReadFile(filepath.Join(dir, "enclave", "dev-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	dt := http.DefaultTransport.(*http.Transport)
	saved := dt.TLSClientConfig
	dt.TLSClientConfig = &tls.Config{RootCAs: pool}
	defer func() { dt.TLSClientConfig = saved }()
	pr := testenv.FetchPayRequest(t, "https://"+public+"/.well-known/lnurlp/split")
	if !strings.HasPrefix(pr.Callback, "https://"+public+"/") {
		t.Fatalf("callback %q is not on the public address", pr.Callback)
	}
	var pubkey string
	openRO(t, filepath.Join(dir, "enclave")).QueryRow(`SELECT pubkey FROM containers WHERE id = ?`, id).Scan(&pubkey)
	if _, err := ln.Payer.Pay(context.Background(), testenv.ZapInvoice(t, pr.Callback, pubkey, relay.URL, 21000)); err != nil {
		t.Fatal(err)
	}
	receipts := nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {pubkey}}}
	if r := testenv.Next(t, testenv.Subscribe(t, relay.URL, receipts), "zap receipt"); r.PubKey != pr.NostrPubkey {
		t.Errorf("receipt by %s, want %s", r.PubKey, pr.NostrPubkey)
	}
	if credits := countCredits(t, filepath.Join(dir, "enclave"), id); credits != 2 {
		t.Errorf("%d credits, want 2 (deploy and zap)", credits)
	}

	// The metrics reach the operator only through the parent's own
	// listener, never the public port.
	resp, err := http.Get("https://" + public + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the public port: %s, want 404", resp.Status)
	}
	body := testenv.Scrape(t, "http://"+metricsAddr+"/metrics")
	testenv.PromtoolCheck(t, body)
	for _, want := range []string{`enclaved_containers{state="running"} 1`, `enclaved_link_streams_opened_total{opened_by="parent",service="ingress"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("the metrics through the parent lack %s", want)
		}
	}
}
