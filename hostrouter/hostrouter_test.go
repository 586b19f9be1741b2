package hostrouter_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/enclaved/enclaved/hostrouter"
)

func TestContainerName(t *testing.T) {
	r := &hostrouter.Router{Host: "Enclaved.Example.com"}
	for host, want := range map[string]string{
		"web.enclaved.example.com":      "web",
		"WEB.enclaved.example.com.:443": "web",
		"a-1.enclaved.example.com:8443": "a-1",
		"enclaved.example.com":          "",
		"x.y.enclaved.example.com":      "",
		"1web.enclaved.example.com":     "",
		"web.enclaved.example.com.evil": "",
		"webenclaved.example.com":       "",
		"":                              "",
	} {
		got, ok := r.ContainerName(host)
		if got != want || ok != (want != "") {
			t.Errorf("ContainerName(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
}

// The dev CA survives a restart (clients keep trusting dev-ca.pem) and
// issues certificates that verify for the name asked for only.
func TestDevCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := hostrouter.LoadOrCreateDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := hostrouter.LoadOrCreateDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := again.GetCertificate("fallback.test")(&tls.ClientHelloInfo{ServerName: "web.enclaved.test"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), DNSName: "web.enclaved.test"}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("a reloaded CA's certificate does not verify against the first: %v", err)
	}
	opts.DNSName = "other.enclaved.test"
	if _, err := leaf.Verify(opts); err == nil {
		t.Error("the certificate verifies for another name")
	}
	noSNI, err := ca.GetCertificate("fallback.test")(&tls.ClientHelloInfo{})
	if err != nil || noSNI.Leaf.DNSNames[0] != "fallback.test" {
		t.Errorf("without SNI: %v %v", noSNI.Leaf.DNSNames, err)
	}
}
