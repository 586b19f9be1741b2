package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/nip"
)

// runDM is a minimal Nostr client for trying an instance without a Nostr
// app: it sends one command by NIP-17 (default), NIP-04 or as a mention,
// and prints the replies addressed to its key.
func runDM(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("dm", `Sends a command to an instance and prints its replies:

  enclaved dm [flags] <instance npub> <command ...>

The client key is kept in <data dir>/client.key (created on first use).
Before a deploy it verifies the instance's announcement and attestation and
prints what it verified (prod, debug or dev; PCRs; release signers), with a
WARNING for a dev or debug instance or a failing check: verify before you
pay.`, stderr)
	load := configFlags(fs, environ)
	var relays setFlags
	fs.Var(&relays, "relay", "relay URL to send to and read from; repeatable (default: the dev relay)")
	nip04 := fs.Bool("nip04", false, "send a NIP-04 DM instead of NIP-17")
	mention := fs.Bool("mention", false, "send a public mention (kind 1) instead of a DM")
	keyFile := fs.String("key-file", "", "client secret key file (default <data dir>/client.key)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for replies")
	replies := fs.Int("replies", 1, "stop after this many messages: the answer, then notices (such as \"is running\"); 0 waits the whole -wait")
	devRoot := fs.String("dev-root", "", "PEM file of a dev instance's attestation root, to verify it before a deploy (default <data dir>/dev-root.pem if present)")
	payWait := fs.Duration("pay-wait", 15*time.Minute, "after a deploy's quote, how long to wait for the payment and the notice that follows it (unless -replies is given)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return errors.New("dm: want an instance npub and a command")
	}
	if *nip04 && *mention {
		return errors.New("dm: -nip04 and -mention exclude each other")
	}
	prefix, v, err := nip19.Decode(fs.Arg(0))
	if err != nil || prefix != "npub" {
		return fmt.Errorf("dm: %q is not an npub", fs.Arg(0))
	}
	to := v.(string)
	text := strings.Join(fs.Args()[1:], " ")
	cfg, err := load()
	if err != nil {
		return err
	}
	urls, err := clientRelays(cfg, relays)
	if err != nil {
		return fmt.Errorf("dm: %w", err)
	}
	if *keyFile == "" {
		if err := ensureDir(cfg.DataDir, "data dir", "-data-dir (data_dir)"); err != nil {
			return err
		}
		*keyFile = filepath.Join(cfg.DataDir, "client.key")
	}
	key, err := enclave.LoadOrCreateKey(*keyFile)
	if err != nil {
		return err
	}
	keys := key.Keys()
	me := key.PublicKey()

	ch := nip.ChannelNIP17
	var evt nostr.Event
	var id string
	now := nostr.Now()
	// Two messages with the same text in the same second would be the
	// same NIP-17 rumor, which the instance rightly answers once: each
	// message this key sends gets a created_at of its own.
	at, err := uniqueTimestamp(*keyFile+".last", now)
	if err != nil {
		return err
	}
	switch {
	case *mention:
		ch = nip.ChannelMention
		evt = nostr.Event{Kind: nostr.KindTextNote, CreatedAt: at, Content: "nostr:" + fs.Arg(0) + " " + text,
			Tags: nostr.Tags{{"p", to}}}
		err = keys.SignEvent(ctx, &evt)
		id = evt.ID
	case *nip04:
		ch = nip.ChannelNIP04
		evt, id, err = nip.DM(ctx, keys, ch, to, text, at)
	default:
		evt, id, err = nip.DM(ctx, keys, ch, to, text, at)
	}
	if err != nil {
		return err
	}

	pool := nostr.NewSimplePool(ctx)
	defer pool.Close("done")
	isDeploy := strings.EqualFold(fs.Arg(1), "deploy")
	if isDeploy {
		root, err := readDevRoot(*devRoot, cfg.DataDir)
		if err != nil {
			return err
		}
		checkInstance(ctx, pool, urls, to, root, stdout)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.AfterFunc(*wait, cancel)
	defer deadline.Stop()
	// A deploy's quote is followed by what its payment brings (the
	// "is running" notice), unless -replies says otherwise.
	awaitPayment := isDeploy && !flagGiven(fs, "replies")
	// Subscribe first, so no reply is missed; gift wraps may be back-dated.
	since := nostr.Timestamp(now - 2*24*3600)
	incoming := pool.SubscribeMany(ctx, urls, nostr.Filter{
		Kinds: []int{nostr.KindGiftWrap, nostr.KindEncryptedDirectMessage, nostr.KindTextNote},
		Tags:  nostr.TagMap{"p": {me}}, Since: &since,
	})
	sent := 0
	for res := range pool.PublishMany(ctx, urls, evt) {
		if res.Error != nil {
			fmt.Fprintf(stderr, "%s: %v\n", res.RelayURL, res.Error)
		} else {
			sent++
		}
	}
	if sent == 0 {
		return errors.New("dm: no relay took the message")
	}
	fmt.Fprintf(stderr, "sent by %s as %s; waiting up to %s for replies\n", ch, key.Npub(), *wait)
	seen := map[string]bool{}
	got, answered := 0, false
	for re := range incoming {
		if seen[re.Event.ID] {
			continue
		}
		seen[re.Event.ID] = true
		msg, err := nip.Decode(ctx, keys, me, re.Event)
		if err != nil || msg.From != to {
			continue
		}
		// The answer to this message first; notices (no e tag) count only
		// once it came, so one from the same second before it is not
		// taken for it. Answers to other messages are skipped. (For
		// NIP-17, CreatedAt is the rumor's: the real time.)
		isAnswer := msg.Event.Tags.FindWithValue("e", id) != nil
		if !isAnswer && (msg.Event.Tags.Find("e") != nil || msg.CreatedAt < now || !answered) {
			continue
		}
		answered = answered || isAnswer
		kind := "reply"
		if !isAnswer {
			kind = "notice"
		}
		fmt.Fprintf(stdout, "--- %s %s\n%s\n", msg.Channel, kind, msg.Text)
		got++
		if isAnswer && awaitPayment && invoiceRE.MatchString(msg.Text) {
			*replies++
			deadline.Reset(*payWait)
			fmt.Fprintf(stderr, "waiting up to %s for the payment (Ctrl-C stops waiting; the invoice stays payable until it expires)\n", *payWait)
		}
		if *replies > 0 && got >= *replies {
			return nil
		}
	}
	if got == 0 {
		return fmt.Errorf("dm: no reply within %s", *wait)
	}
	if got < *replies && ctx.Err() != nil {
		return fmt.Errorf("dm: nothing more within the wait (%d of %d messages)", got, *replies)
	}
	return nil
}

// invoiceRE finds a BOLT-11 invoice (mainnet, testnet, signet or regtest).
var invoiceRE = regexp.MustCompile(`\bln(bc|tb|tbs|bcrt)[0-9]*[munp]?1[02-9ac-hj-np-z]{50,}\b`)

// flagGiven says whether the flag called name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// clientRelays are where the dev clients (dm, dev zap) talk: the -relay
// flags, else nostr.relays, else the dev instance's embedded relay.
func clientRelays(cfg config.Config, flags []string) ([]string, error) {
	switch {
	case len(flags) > 0:
		return flags, nil
	case len(cfg.Nostr.Relays) > 0:
		return cfg.Nostr.Relays, nil
	case cfg.Dev.RelayListen != "":
		return []string{"ws://" + cfg.Dev.RelayListen}, nil
	}
	return nil, errors.New("no relay: give -relay")
}

// uniqueTimestamp is now, or one second after the created_at last handed
// out (recorded in file), whichever is later; it records what it returns.
func uniqueTimestamp(file string, now nostr.Timestamp) (nostr.Timestamp, error) {
	if b, err := os.ReadFile(file); err == nil {
		if last, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && nostr.Timestamp(last) >= now {
			now = nostr.Timestamp(last) + 1
		}
	}
	if err := os.WriteFile(file, []byte(strconv.FormatInt(int64(now), 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("dm: %w", err)
	}
	return now, nil
}
