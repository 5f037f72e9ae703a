package swarm

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func newTestAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	cfg.Logger = quietLogger
	a, err := NewAgent(listen(t), t.TempDir(), "127.0.0.1:1", nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// rawDial opens the peer protocol to addr by hand and sends h.
func rawDial(t *testing.T, addr string, h handshake) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+connPath, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", upgradeProtocol)
	if err := req.Write(nc); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	if _, err := nc.Write(appendHandshake(nil, h)); err != nil {
		t.Fatal(err)
	}
	return nc, br
}

func TestRejectUnknownBlob(t *testing.T) {
	a := newTestAgent(t, Config{})
	_, br := rawDial(t, a.Addr(), handshake{id: "stranger", digest: digestOf([]byte("x")), bitfield: newBitfield(1)})
	m, err := readMessage(br)
	if err != nil {
		t.Fatal(err)
	}
	if m.typ != msgError || m.code != codeRejected || !strings.Contains(m.text, "unknown blob") {
		t.Errorf("answer %+v, want a rejection for an unknown blob", m)
	}
}

// TestServePieces speaks the protocol by hand to an agent holding a blob:
// handshake with bitfield, request, piece, and an error for a piece the
// peer lacks.
func TestServePieces(t *testing.T) {
	a := newTestAgent(t, Config{})
	blob := []byte("0123456789abcdefghij")
	meta, err := computeMetaInfo(strings.NewReader(string(blob)), digestOf(blob), 8)
	if err != nil {
		t.Fatal(err)
	}
	tor, _, err := a.n.addTorrent(meta, false)
	if err != nil {
		t.Fatal(err)
	}
	// The agent has piece 1 only.
	if _, err := tor.file.WriteAt(blob[8:16], 8); err != nil {
		t.Fatal(err)
	}
	tor.status[1] = pieceComplete
	tor.have.set(1)

	nc, br := rawDial(t, a.Addr(), handshake{id: "leech", digest: meta.Digest, bitfield: newBitfield(3)})
	m, err := readMessage(br)
	if err != nil || m.typ != msgHandshake {
		t.Fatalf("answer %+v, %v; want a handshake", m, err)
	}
	if !m.hs.bitfield.has(1) || m.hs.bitfield.count() != 1 || m.hs.id != a.ID() {
		t.Errorf("handshake %+v, want id %s and piece 1 only", m.hs, a.ID())
	}
	nc.Write(appendIndexMsg(nil, msgRequest, 1))
	nc.Write(appendIndexMsg(nil, msgRequest, 2))
	var gotPiece, gotError bool
	for range 2 {
		m, err = readMessage(br)
		switch {
		case err != nil:
			t.Fatal(err)
		case m.typ == msgError && m.code == codePieceUnavailable && m.index == 2:
			gotError = true
		case m.typ == msgPiece && m.index == 1 && m.payload == 8:
			got := make([]byte, 8)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != string(blob[8:16]) {
				t.Errorf("piece 1 = %q, %v; want %q", got, err, blob[8:16])
			}
			gotPiece = true
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
	if !gotPiece || !gotError {
		t.Errorf("piece 1 served: %v, piece 2 refused: %v", gotPiece, gotError)
	}
	if a.Uploaded() != 8 {
		t.Errorf("uploaded %d, want 8", a.Uploaded())
	}
}

func TestUpgradeRequired(t *testing.T) {
	a := newTestAgent(t, Config{})
	resp, err := http.Post("http://"+a.Addr()+connPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("POST without Upgrade: %s", resp.Status)
	}
}

func TestAdmit(t *testing.T) {
	a := newTestAgent(t, Config{MaxConns: 3})
	meta, _ := computeMetaInfo(strings.NewReader("abc"), digestOf([]byte("abc")), 2)
	tor, _, err := a.n.addTorrent(meta, false)
	if err != nil {
		t.Fatal(err)
	}
	self := a.ID()
	tor.conns["connected"] = &conn{}
	lower, higher := self[:len(self)-1], self+"z" // sort below and above self
	tor.pending[lower] = true
	tor.pending[higher] = true
	for _, tc := range []struct {
		peer string
		ok   bool
	}{
		{self, false},
		{"connected", false},
		{lower, true},       // both dialed: the smaller id's dial wins
		{higher, false},     // ... and ours wins over the higher's
		{"stranger", false}, // 1 connected + 2 dialing = MaxConns
	} {
		if err := tor.admit(tc.peer); (err == nil) != tc.ok {
			t.Errorf("admit(%q) = %v, want ok=%v", tc.peer, err, tc.ok)
		}
	}
	delete(tor.pending, higher)
	if err := tor.admit("stranger"); err != nil {
		t.Errorf("admit with room: %v", err)
	}
	delete(tor.conns, "connected") // a placeholder, not a connection to close
}
