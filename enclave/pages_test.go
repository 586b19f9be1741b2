package enclave_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcutil/bech32"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
)

// The instance's web pages, in a real browser (headless Chromium) against
// an instance on the real stack: the front page says what the instance is
// (a dev instance here) and shows its npub, price, capacity, the DM to send
// and the egress policy, and its QR code decodes (zbarimg) to the npub
// shown; a paid container's page shows its state, image, a balance between
// two readings of the HTTP API around the page load, its lightning address
// and an LNURL whose QR code decodes to it and which leads to its LNURL-pay
// endpoint; unknown and deleted names get a 404 page. No page writes to the
// console (a probe shows the listener hears it), and nothing private (the
// owner's key, the env) appears.
func TestWebPagesInABrowser(t *testing.T) {
	chromium, zbarimg := pageTools(t)
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	c := testenv.NewClient(t, relay.URL)
	inst.deploy(t, c, fmt.Sprintf("deploy %s units=1 hours=1 name=web env=SECRET_TOKEN=hunter2-private", imgs.Hello.Ref), "web")
	rec := inst.container(t, "web")
	base := "http://" + inst.http
	b := newBrowser(t, chromium)
	private := []string{c.PK, nip.Npub(c.PK), "hunter2-private", "SECRET_TOKEN"}

	// The front page.
	front := b.open(t, base+"/", http.StatusOK)
	for _, want := range []string{"enclaved instance", "dev instance, not an enclave", inst.key.Npub(), "10 sats per unit-hour",
		"3 of 4 units", "deploy <image> units=1 hours=1", "250 millicpu, 64 MiB memory", "not enforced on this instance", relay.URL} {
		if !strings.Contains(front.text, want) {
			t.Errorf("the front page lacks %q:\n%s", want, front.text)
		}
	}
	if !strings.Contains(front.html, `href="nostr:`+inst.key.Npub()+`"`) {
		t.Errorf("the front page has no nostr: link to the instance")
	}
	// The PCRs are those the announcement carries.
	ann, err := inst.in.Announcement(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pcrs := 0
	for _, tag := range ann.Tags {
		if len(tag) >= 3 && tag[0] == "x" {
			pcrs++
			if !strings.Contains(front.text, tag[2]+"\t"+tag[1]) {
				t.Errorf("the front page lacks %s %s", tag[2], tag[1])
			}
		}
	}
	if pcrs != len(nip.AnnouncedPCRs) {
		t.Errorf("the announcement has %d PCRs, want %d", pcrs, len(nip.AnnouncedPCRs))
	}
	if got := b.qr(t, zbarimg, "svg.qr"); got != "nostr:"+inst.key.Npub() {
		t.Errorf("the front page's QR code reads %q, want nostr:%s", got, inst.key.Npub())
	}
	b.screenshot(t, "front.png")

	// The container's page: its balance lies between two readings of the
	// API, taken before and after the page was rendered.
	var before, after httpapi.Container
	inst.get(t, "/api/v1/containers/"+rec.Npub(), &before)
	page := b.open(t, base+"/c/web", http.StatusOK)
	inst.get(t, "/api/v1/containers/"+rec.Npub(), &after)
	address := "web@" + inst.http
	for _, want := range []string{"running", imgs.Hello.Ref, rec.Npub(), address, "1 unit, 10 sats per hour", "time left"} {
		if !strings.Contains(page.text, want) {
			t.Errorf("the container page lacks %q:\n%s", want, page.text)
		}
	}
	shown := b.text(t, "#balance")
	if msat := parseSats(t, shown); msat > before.BalanceMsat || msat < after.BalanceMsat || msat <= 0 {
		t.Errorf("the page shows a balance of %s; the API said %d msat before and %d msat after", shown, before.BalanceMsat, after.BalanceMsat)
	}
	lnurl := b.text(t, "#lnurl")
	if got := b.qr(t, zbarimg, "svg.qr"); !strings.EqualFold(got, lnurl) || got != strings.ToUpper(got) {
		t.Errorf("the container page's QR code reads %q, want %q in upper case (LUD-01)", got, lnurl)
	}
	payURL := decodeLNURL(t, lnurl)
	if want := base + "/.well-known/lnurlp/web"; payURL != want {
		t.Errorf("the LNURL leads to %s, want %s", payURL, want)
	}
	var pr struct {
		Tag, Callback string
		AllowsNostr   bool
	}
	if code := inst.get(t, strings.TrimPrefix(payURL, base), &pr); code != http.StatusOK || pr.Tag != "payRequest" || !pr.AllowsNostr {
		t.Errorf("the LNURL's endpoint answers %d %+v", code, pr)
	}
	b.screenshot(t, "container.png")
	for _, p := range []string{front.html, page.html} {
		for _, secret := range private {
			if strings.Contains(p, secret) {
				t.Errorf("a page shows %q", secret)
			}
		}
	}

	// Unknown and deleted names.
	if nf := b.open(t, base+"/c/nosuch", http.StatusNotFound); !strings.Contains(nf.text, "no container called nosuch") {
		t.Errorf("the 404 page says:\n%s", nf.text)
	}
	c.Send(t, "nip17", self, "delete web")
	c.Await(t, self, "web is deleted")
	if gone := b.open(t, base+"/c/web", http.StatusNotFound); strings.Contains(gone.text, "running") {
		t.Errorf("a deleted container's page says:\n%s", gone.text)
	}

	b.probeConsole(t)
}

// pageTools are the browser and the QR decoder the page test runs; a
// missing one fails the test (scripts/install-deps.sh installs them).
func pageTools(t *testing.T) (chromium, zbarimg string) {
	t.Helper()
	for _, tool := range []struct{ name, pkg string }{{"chromium", "chromium"}, {"zbarimg", "zbar-tools"}} {
		p, err := exec.LookPath(tool.name)
		if err != nil {
			t.Fatalf("%s not found: run scripts/install-deps.sh (Debian's %s)", tool.name, tool.pkg)
		}
		if tool.name == "chromium" {
			chromium = p
		} else {
			zbarimg = p
		}
	}
	return chromium, zbarimg
}

// browser is a headless Chromium tab that records what the pages write to
// the console: calls of the console API, uncaught exceptions and the
// browser log's warnings and errors.
type browser struct {
	ctx context.Context

	mu      sync.Mutex
	console []string
}

func newBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(900, 1200))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			msg = fmt.Sprintf("console.%s(%s)", ev.Type, strings.Join(args, ", "))
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level != cdplog.EntryLevelWarning && ev.Entry.Level != cdplog.EntryLevelError {
				return
			}
			msg = fmt.Sprintf("log %s %s: %s (%s)", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		default:
			return
		}
		b.mu.Lock()
		b.console = append(b.console, msg)
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

// loaded is a page as the browser shows it.
type loaded struct {
	text string // what a reader sees (innerText)
	html string // the document as the browser parsed it
}

// open loads url, checks its HTTP status, and fails the test if the page
// wrote anything to the console while it loaded.
func (b *browser) open(t *testing.T, url string, status int) loaded {
	t.Helper()
	resp, err := chromedp.Run(b.ctx, chromedp.NavigateResponse(url))
	// Chromium gives up a load when the machine's addresses change, as
	// they do when Docker adds or removes a container's network; such a
	// load is tried again (a bounded number of times).
	for i := 0; i < 3 && err != nil && strings.Contains(err.Error(), "ERR_NETWORK_CHANGED"); i++ {
		resp, err = chromedp.Run(b.ctx, chromedp.NavigateResponse(url))
	}
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	if int(resp.Status) != status {
		t.Errorf("%s: status %d, want %d", url, resp.Status, status)
	}
	var p loaded
	if p.text, err = chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`)); err != nil {
		t.Fatal(err)
	}
	if p.html, err = chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err != nil {
		t.Fatal(err)
	}
	// Listen saw every event sent before the replies above.
	b.mu.Lock()
	msgs := b.console
	b.console = nil
	b.mu.Unlock()
	for _, m := range msgs {
		// Chromium logs a document's own error status once.
		if status >= 400 && strings.Contains(m, "network") && strings.Contains(m, fmt.Sprintf("status of %d", status)) && strings.Contains(m, url) {
			continue
		}
		t.Errorf("%s wrote to the console: %s", url, m)
	}
	return p
}

// text is what the first element matching css shows.
func (b *browser) text(t *testing.T, css string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("%s: %v", css, err)
	}
	return strings.TrimSpace(s)
}

// qr decodes the QR code the browser renders for the element css, from a
// screenshot of it, with zbarimg.
func (b *browser) qr(t *testing.T, zbarimg, css string) string {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("screenshot of %s: %v", css, err)
	}
	f := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(f, png, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(zbarimg, "--quiet", "--raw", f)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zbarimg found no QR code in %s: %v %s", css, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// screenshot saves the whole page as name in $ENCLAVED_PAGES_SCREENSHOTS,
// when it is set, for people to look at.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("ENCLAVED_PAGES_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
	}
}

// probeConsole checks that the listener hears the console at all, so that
// "no console errors" above means something.
func (b *browser) probeConsole(t *testing.T) {
	t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`console.error("enclaved-probe"), true`)); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.console) != 1 || !strings.Contains(b.console[0], "enclaved-probe") {
		t.Errorf("the console listener heard %q, want the probe alone", b.console)
	}
}

// parseSats reads "12 sats" or "9.987 sats" as msat.
func parseSats(t *testing.T, s string) int64 {
	t.Helper()
	n, ok := strings.CutSuffix(s, " sats")
	whole, frac, _ := strings.Cut(n, ".")
	w, err := strconv.ParseInt(whole, 10, 64)
	if !ok || err != nil || len(frac) > 3 {
		t.Fatalf("balance %q is not in sats", s)
	}
	f := int64(0)
	if frac != "" {
		frac += strings.Repeat("0", 3-len(frac))
		if f, err = strconv.ParseInt(frac, 10, 64); err != nil {
			t.Fatalf("balance %q is not in sats", s)
		}
	}
	return w*1000 + f
}

// decodeLNURL is the URL a bech32 LNURL (LUD-01) encodes.
func decodeLNURL(t *testing.T, lnurl string) string {
	t.Helper()
	hrp, data, err := bech32.DecodeNoLimit(strings.ToLower(lnurl))
	if err != nil || hrp != "lnurl" {
		t.Fatalf("LNURL %q: %v (hrp %q)", lnurl, err, hrp)
	}
	raw, err := bech32.ConvertBits(data, 5, 8, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
