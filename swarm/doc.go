// Package swarm is a Kraken-like peer-to-peer swarm: the baseline that
// `faasnet bench` runs beside function trees, built as well as Uber's Kraken
// (github.com/uber/kraken, lib/torrent/scheduler) is, not as a strawman.
//
// Three components, as in Kraken:
//
//   - A [Tracker] knows which peers hold (part of) each blob. Peers announce
//     themselves per blob when they start it, every announce interval while
//     they still lack pieces and have room for connections, and once when
//     they complete it. An announce is answered with a random sample of up to
//     PeerHandoutLimit peers of that blob plus the blob's origin, ordered
//     seeders first, then origins, then incomplete peers (Kraken's
//     "completeness" handout priority). The tracker also proxies metainfo
//     and manifest requests to the origin that owns the blob (rendezvous
//     hashing, like Kraken's origin hash ring).
//   - An [Origin] is the only client of the registry. Asked for the metainfo
//     of a blob, it fetches the whole blob from the registry once, stores it
//     on disk and computes its metainfo (piece length, per-piece sha256);
//     then it seeds the blob like any peer that has every piece. This is
//     Kraken's behaviour (the origin's blob refresher downloads from the
//     backend, then generates metainfo): per-piece digests cannot be known
//     before the bytes are.
//   - An [Agent] is a peer. [Agent.Pull] resolves an image through the
//     tracker (so the registry only ever talks to the origin), then downloads
//     the config and the layers in parallel, each as its own torrent: it
//     connects to up to MaxConns peers per blob, exchanges bitfields in the
//     handshake, announces each verified piece to its peers (have), requests
//     the rarest missing pieces with at most PipelineLimit outstanding
//     requests per connection, sends duplicate requests in endgame, verifies
//     each piece against the metainfo (a bad piece is discarded, counted, its
//     sender disconnected and blacklisted, and the piece re-requested
//     elsewhere), serves pieces to other peers while it downloads, and stays
//     a seeder until closed.
//
// # Wire protocol
//
// Peers talk over one long-lived TCP connection per (peer, blob) pair,
// opened as an HTTP/1.1 upgrade of POST /swarm/v1/conn (so the peer
// protocol, health checks and the origin's HTTP endpoints share a port) and
// then carrying length-prefixed binary messages: handshake (with bitfield),
// have, request, piece, cancel, error, complete. Every byte a peer sends
// passes through its upload limiter, every byte it receives through its
// download limiter.
//
// # Defaults against Kraken's
//
// Config's defaults are Kraken's: 4 MiB pieces (origin metainfogen), 10 open
// connections per blob (connstate max_open_conn), pipeline limit 3 and
// endgame at 3 remaining pieces (dispatch), request timeout 4 s per MB of
// piece with a 4 s floor, so 16 s (dispatch), rarest-first piece selection
// (the piece_request_policy of Kraken's production agent config; the code
// default is random), a handout of 50 peers and an announce interval of 3 s
// (tracker), a 30 s blacklist after a failed connection (connstate), a 5 s
// handshake timeout (conn).
//
// Where we differ, we differ in the swarm's favour, so that the comparison
// is against Kraken at its best: Kraken announces one torrent per tick
// round-robin (so an image of six blobs announces each one every 18 s), we
// announce every incomplete, unsaturated blob every interval; the tracker
// answers metainfo requests once the origin has the blob instead of having
// clients poll; peers send cancel for pieces they no longer need (Kraken
// ignores cancel); after a piece arrives, every connection's pipeline is
// refilled, not only the sender's; control messages (have, request,
// cancel) overtake queued piece payloads on a connection; and a peer that
// sends a bad piece is disconnected and blacklisted (Kraken only re-asks
// the piece elsewhere). Pieces are verified with sha256, not Kraken's
// 32-bit sums.
//
// Not modelled: persistence of partial downloads across restarts, connection
// idle and lifetime limits (ConnTTI 30 s, ConnTTL 1 h), seeder and leecher
// time-to-idle: a bench run is shorter than all of them.
package swarm
