// Package regtest runs a Lightning regtest network for dev mode and tests:
// btcd and two LND nodes built from the Go module proxy (scripts/
// lightning-tools.sh), the operator (the instance's node) and the payer (a
// renter's wallet), with a funded channel payer→operator. A network kept
// in a directory restarts from it with its channel and balances.
//
// Dev and test tooling only; never part of an enclave.
package regtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/lightningnetwork/lnd/aezeed"
	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/routerrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/internal/proc"
)

// Channel sizes of the regtest network: the payer opens a channel to the
// operator and pushes part of it, so both sides can pay.
const (
	ChannelSat = 10_000_000
	PushSat    = 1_000_000
)

// payerEntropy seeds the payer's wallet, so its first address (where btcd
// mines) is known before btcd starts. lnd derives on-chain addresses at
// m/84'/0'/0'/0/i on every network.
var payerEntropy = [aezeed.EntropySize]byte{'e', 'n', 'c', 'l', 'a', 'v', 'e', 'd', '-', 'p', 'a', 'y', 'e', 'r', '-', '1'}

const walletPassword = "enclaved-regtest"

// Net is a regtest network: btcd and two LND nodes, Operator (the
// instance's node) and Payer (a renter's wallet), with an active channel
// Payer→Operator.
type Net struct {
	Operator *Node
	Payer    *Node

	btcd     *proc.Proc
	btcdAddr string // RPC host:port
	btc      *rpcclient.Client
}

// Node is one running lnd with an admin connection.
type Node struct {
	Name     string
	Dir      string
	GRPCAddr string // 127.0.0.1:port
	P2PAddr  string
	Pubkey   string

	Client lnrpc.LightningClient // admin macaroon
	Router routerrpc.RouterClient

	proc *proc.Proc
	conn *grpc.ClientConn
}

// TLSCertPath is the node's self-signed gRPC certificate.
func (n *Node) TLSCertPath() string { return filepath.Join(n.Dir, "tls.cert") }

// MacaroonPath returns the path of a macaroon ("admin", "invoice", ...).
func (n *Node) MacaroonPath(name string) string {
	return filepath.Join(n.Dir, "data", "chain", "bitcoin", "regtest", name+".macaroon")
}

// Endpoint returns how the enclave would reach this node with the named
// macaroon (production uses "invoice").
func (n *Node) Endpoint(macaroon string) (lnd.Endpoint, error) {
	return lnd.EndpointFromFiles(n.GRPCAddr, n.TLSCertPath(), n.MacaroonPath(macaroon))
}

// Start runs a fresh network in dir (which must be empty or absent) with
// the tools in bins, in about 10 s. Close stops it.
//
// Networks are not restarted: btcd v0.26.2 comes back from a clean stop at
// height 0 in regtest (its generated blocks are not kept), which orphans
// the nodes' channel.
func Start(ctx context.Context, dir, bins string) (_ *Net, err error) {
	n := &Net{}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	seed, err := aezeed.New(aezeed.CipherSeedVersion, &payerEntropy, time.Now())
	if err != nil {
		return nil, err
	}
	mineTo, err := firstAddress(seed.Entropy[:])
	if err != nil {
		return nil, err
	}
	if err := n.startBtcd(ctx, bins, filepath.Join(dir, "btcd"), mineTo); err != nil {
		return nil, err
	}
	// lnd waits for a chain tip with a recent timestamp; the regtest genesis
	// block is from 2011, and a restarted chain's tip may be old too.
	if _, err := n.btc.Generate(1); err != nil {
		return nil, fmt.Errorf("mine a block: %w", err)
	}

	// Both nodes start in parallel; the payer waits for its wallet.
	var wg sync.WaitGroup
	var opErr, payErr error
	wg.Go(func() {
		n.Operator, opErr = startLND(ctx, bins, filepath.Join(dir, "operator"), "operator", n.btcdArgs(dir), nil)
	})
	wg.Go(func() {
		m, err := seed.ToMnemonic(nil)
		if err != nil {
			payErr = err
			return
		}
		n.Payer, payErr = startLND(ctx, bins, filepath.Join(dir, "payer"), "payer", n.btcdArgs(dir), m[:])
	})
	wg.Wait()
	if err := errors.Join(opErr, payErr); err != nil {
		return nil, err
	}
	addr, err := n.Payer.Client.NewAddress(ctx, &lnrpc.NewAddressRequest{Type: lnrpc.AddressType_WITNESS_PUBKEY_HASH})
	if err != nil {
		return nil, fmt.Errorf("payer address: %w", err)
	}
	if addr.Address != mineTo {
		return nil, fmt.Errorf("payer's first address %s is not the derived mining address %s: lnd changed its derivation path", addr.Address, mineTo)
	}
	// 101 blocks: the first coinbase matures.
	if err := n.Mine(ctx, 101); err != nil {
		return nil, err
	}
	if err := proc.WaitFor(ctx, "payer's mined coins", time.Minute, func(ctx context.Context) (bool, error) {
		b, err := n.Payer.Client.WalletBalance(ctx, &lnrpc.WalletBalanceRequest{})
		return err == nil && b.ConfirmedBalance > ChannelSat, err
	}, n.Payer.proc); err != nil {
		return nil, err
	}
	if err := n.openChannel(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// firstAddress derives lnd's first default-account P2WKH address from the
// wallet seed: m/84'/0'/0'/0/0.
func firstAddress(seed []byte) (string, error) {
	params := &chaincfg.RegressionNetParams
	k, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		return "", err
	}
	for _, i := range []uint32{hdkeychain.HardenedKeyStart + 84, hdkeychain.HardenedKeyStart, hdkeychain.HardenedKeyStart, 0, 0} {
		if k, err = k.Derive(i); err != nil {
			return "", err
		}
	}
	pub, err := k.ECPubKey()
	if err != nil {
		return "", err
	}
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub.SerializeCompressed()), params)
	if err != nil {
		return "", err
	}
	return a.EncodeAddress(), nil
}

const btcdUser, btcdPass = "enclaved", "regtest"

func (n *Net) startBtcd(ctx context.Context, bins, dir, mineTo string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	rpcAddr := fmt.Sprintf("127.0.0.1:%d", port)
	n.btcdAddr = rpcAddr
	if err := os.WriteFile(filepath.Join(dir, "btcd.conf"), nil, 0o600); err != nil {
		return err
	}
	n.btcd, err = proc.Start("btcd", dir, filepath.Join(bins, "btcd"),
		"--regtest", "--datadir="+filepath.Join(dir, "data"), "--logdir="+filepath.Join(dir, "logs"),
		"--configfile="+filepath.Join(dir, "btcd.conf"),
		"--rpcuser="+btcdUser, "--rpcpass="+btcdPass, "--rpclisten="+rpcAddr,
		"--rpccert="+filepath.Join(dir, "rpc.cert"), "--rpckey="+filepath.Join(dir, "rpc.key"),
		"--nolisten", "--miningaddr="+mineTo, "--debuglevel=info")
	if err != nil {
		return err
	}
	var cert []byte
	return proc.WaitFor(ctx, "btcd RPC", 30*time.Second, func(context.Context) (bool, error) {
		if cert == nil {
			c, err := os.ReadFile(filepath.Join(dir, "rpc.cert"))
			if err != nil || len(c) == 0 {
				return false, err
			}
			cert = c
		}
		if n.btc == nil {
			c, err := rpcclient.New(&rpcclient.ConnConfig{Host: rpcAddr, User: btcdUser, Pass: btcdPass,
				HTTPPostMode: true, Certificates: cert}, nil)
			if err != nil {
				return false, err
			}
			n.btc = c
		}
		_, err := n.btc.GetBlockCount()
		return err == nil, err
	}, n.btcd)
}

func (n *Net) btcdArgs(root string) []string {
	dir := filepath.Join(root, "btcd")
	return []string{
		"--bitcoin.node=btcd", "--btcd.rpchost=" + n.btcdAddr,
		"--btcd.rpcuser=" + btcdUser, "--btcd.rpcpass=" + btcdPass,
		"--btcd.rpccert=" + filepath.Join(dir, "rpc.cert"),
	}
}

// startLND starts one node. With a mnemonic the wallet is created from it
// through the WalletUnlocker; without, lnd creates one itself (--noseedbackup).
func startLND(ctx context.Context, bins, dir, name string, backend []string, mnemonic []string) (*Node, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	rpcPort, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	p2pPort, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	// An empty config file: nothing from ~/.lnd may leak in.
	if err := os.WriteFile(filepath.Join(dir, "lnd.conf"), nil, 0o600); err != nil {
		return nil, err
	}
	node := &Node{Name: name, Dir: dir,
		GRPCAddr: fmt.Sprintf("127.0.0.1:%d", rpcPort), P2PAddr: fmt.Sprintf("127.0.0.1:%d", p2pPort)}
	args := append([]string{
		"--lnddir=" + dir, "--configfile=" + filepath.Join(dir, "lnd.conf"),
		"--bitcoin.active", "--bitcoin.regtest", "--alias=" + name,
		"--rpclisten=" + node.GRPCAddr, "--listen=" + node.P2PAddr, "--norest",
		"--tlsextraip=127.0.0.1", "--nobootstrap", "--debuglevel=info",
		// Gossip and reconnects fast enough for tests.
		"--trickledelay=50", "--maxbackoff=1s", "--bitcoin.defaultchanconfs=1",
		"--accept-keysend",
	}, backend...)
	if mnemonic == nil {
		args = append(args, "--noseedbackup")
	}
	node.proc, err = proc.Start("lnd", dir, filepath.Join(bins, "lnd"), args...)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Node, error) {
		node.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := proc.WaitFor(ctx, "tls.cert", 30*time.Second, func(context.Context) (bool, error) {
		fi, err := os.Stat(node.TLSCertPath())
		return err == nil && fi.Size() > 0, nil
	}, node.proc); err != nil {
		return fail(err)
	}
	tlsCreds, err := credentials.NewClientTLSFromFile(node.TLSCertPath(), "")
	if err != nil {
		return fail(err)
	}
	bare, err := grpc.NewClient(node.GRPCAddr, grpc.WithTransportCredentials(tlsCreds))
	if err != nil {
		return fail(err)
	}
	defer bare.Close()
	state := lnrpc.NewStateClient(bare)
	stateIs := func(want lnrpc.WalletState) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			s, err := state.GetState(ctx, &lnrpc.GetStateRequest{})
			if err != nil {
				return false, err
			}
			return s.State >= want && s.State != lnrpc.WalletState_WAITING_TO_START, nil
		}
	}
	if mnemonic != nil {
		if err := proc.WaitFor(ctx, "wallet unlocker", 30*time.Second, func(ctx context.Context) (bool, error) {
			s, err := state.GetState(ctx, &lnrpc.GetStateRequest{})
			return err == nil && s.State == lnrpc.WalletState_NON_EXISTING, err
		}, node.proc); err != nil {
			return fail(err)
		}
		if _, err := lnrpc.NewWalletUnlockerClient(bare).InitWallet(ctx, &lnrpc.InitWalletRequest{
			WalletPassword: []byte(walletPassword), CipherSeedMnemonic: mnemonic,
		}); err != nil {
			return fail(fmt.Errorf("init wallet: %w", err))
		}
	}
	if err := proc.WaitFor(ctx, "lnd server active", time.Minute, stateIs(lnrpc.WalletState_SERVER_ACTIVE), node.proc); err != nil {
		return fail(err)
	}
	ep, err := node.Endpoint("admin")
	if err != nil {
		return fail(err)
	}
	if node.conn, err = lnd.Dial(ep); err != nil {
		return fail(err)
	}
	node.Client = lnrpc.NewLightningClient(node.conn)
	node.Router = routerrpc.NewRouterClient(node.conn)
	info, err := node.Client.GetInfo(ctx, &lnrpc.GetInfoRequest{})
	if err != nil {
		return fail(err)
	}
	node.Pubkey = info.IdentityPubkey
	return node, nil
}

// Mine mines blocks (to the payer's first address) and waits until both
// nodes have seen them.
func (n *Net) Mine(ctx context.Context, blocks uint32) error {
	if _, err := n.btc.Generate(blocks); err != nil {
		return fmt.Errorf("mine %d blocks: %w", blocks, err)
	}
	height, err := n.btc.GetBlockCount()
	if err != nil {
		return err
	}
	for _, node := range []*Node{n.Operator, n.Payer} {
		if err := proc.WaitFor(ctx, node.Name+" synced to height", time.Minute, func(ctx context.Context) (bool, error) {
			info, err := node.Client.GetInfo(ctx, &lnrpc.GetInfoRequest{})
			return err == nil && int64(info.BlockHeight) >= height && info.SyncedToChain, err
		}, node.proc); err != nil {
			return err
		}
	}
	return nil
}

func (n *Net) openChannel(ctx context.Context) error {
	if _, err := n.Payer.Client.ConnectPeer(ctx, &lnrpc.ConnectPeerRequest{
		Addr: &lnrpc.LightningAddress{Pubkey: n.Operator.Pubkey, Host: n.Operator.P2PAddr},
	}); err != nil {
		return fmt.Errorf("connect payer to operator: %w", err)
	}
	if _, err := n.Payer.Client.OpenChannelSync(ctx, &lnrpc.OpenChannelRequest{
		NodePubkeyString: n.Operator.Pubkey, LocalFundingAmount: ChannelSat, PushSat: PushSat,
	}); err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := n.Mine(ctx, 6); err != nil {
		return err
	}
	return n.channelsReady(ctx)
}

// channelsReady waits until the channel is active on both nodes.
func (n *Net) channelsReady(ctx context.Context) error {
	// Active on both sides is not enough: both graphs must hold both
	// policies, or the first payment fails.
	for _, node := range []*Node{n.Payer, n.Operator} {
		if err := proc.WaitFor(ctx, node.Name+" channel active with both policies", time.Minute, func(ctx context.Context) (bool, error) {
			chans, err := node.Client.ListChannels(ctx, &lnrpc.ListChannelsRequest{ActiveOnly: true})
			if err != nil || len(chans.Channels) == 0 {
				return false, err
			}
			edge, err := node.Client.GetChanInfo(ctx, &lnrpc.ChanInfoRequest{ChanId: chans.Channels[0].ChanId})
			if err != nil {
				return false, err
			}
			return edge.Node1Policy != nil && edge.Node2Policy != nil, nil
		}, node.proc); err != nil {
			return err
		}
	}
	return nil
}

// Pay pays a BOLT-11 invoice from this node and returns the settled payment
// (with its preimage), or an error naming the failure reason.
func (n *Node) Pay(ctx context.Context, bolt11 string) (*lnrpc.Payment, error) {
	p, err := pay(ctx, n.Router, bolt11)
	if err != nil {
		return p, fmt.Errorf("%s pay: %w", n.Name, err)
	}
	return p, nil
}

// PayWith pays a BOLT-11 invoice from the node at ep (a macaroon that may
// send payments), as `enclaved dev pay` does with the dev payer.
func PayWith(ctx context.Context, ep lnd.Endpoint, bolt11 string) (*lnrpc.Payment, error) {
	conn, err := lnd.Dial(ep)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return pay(ctx, routerrpc.NewRouterClient(conn), bolt11)
}

func pay(ctx context.Context, router routerrpc.RouterClient, bolt11 string) (*lnrpc.Payment, error) {
	stream, err := router.SendPaymentV2(ctx, &routerrpc.SendPaymentRequest{
		PaymentRequest: bolt11, TimeoutSeconds: 30, FeeLimitSat: 1000,
	})
	if err != nil {
		return nil, err
	}
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("stream ended before the payment did")
		}
		if err != nil {
			return nil, err
		}
		switch p.Status {
		case lnrpc.Payment_SUCCEEDED:
			return p, nil
		case lnrpc.Payment_FAILED:
			return p, fmt.Errorf("failed: %s", p.FailureReason)
		}
	}
}

// AddInvoice creates an invoice on this node with the admin macaroon.
func (n *Node) AddInvoice(ctx context.Context, msat int64, memo string) (*lnrpc.AddInvoiceResponse, error) {
	return n.Client.AddInvoice(ctx, &lnrpc.Invoice{ValueMsat: msat, Memo: memo, Expiry: 600})
}

// Close stops the node.
func (n *Node) Close() {
	if n == nil {
		return
	}
	if n.conn != nil {
		n.conn.Close()
	}
	// SIGKILL: lnd takes 10-15 s to stop on SIGTERM and this state is thrown away.
	n.proc.Kill()
}

// Close stops the network (its directory is kept).
func (n *Net) Close() {
	// lnd before btcd, or lnd hangs in reconnect back-off.
	n.Operator.Close()
	n.Payer.Close()
	if n.btc != nil {
		n.btc.Shutdown()
	}
	n.btcd.Kill()
}
