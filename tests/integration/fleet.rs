//! The fleet on a real Redis: three hydra-authz replicas, each with its
//! cache on, behind one real Envoy (round robin), in front of the
//! Hydra-shaped server (which counts introspections and can fail on cue).
//!
//! What is shown: a purge at one replica reaches every replica (timed and
//! printed); purges by subject and by client id, through the admin API and
//! the `purge` CLI; Redis killed mid-run never lets a revoked token through
//! and the replicas recover when it is back; with the shared cache a token
//! is introspected once across the fleet; forged or misplaced shared-cache
//! values are refused; stale-if-error bridges an outage, within its window
//! only, and never for a purged token.

use crate::support;

use hydra_authz::admin_proto::purge_token_request::Target;
use hydra_authz::admin_proto::{PurgeAllRequest, PurgeTokenRequest};
use hydra_authz::config::Config;
use hydra_authz::server::RunningServer;
use std::time::{Duration, Instant};
use support::hydra::{FakeHydra, Fault};
use support::redis::RedisServer;
use support::{bearer, config_for, start_authz, Answer, Checker};

const REPLICAS: usize = 3;

struct Fleet {
    redis: RedisServer,
    hydra: FakeHydra,
    replicas: Vec<RunningServer>,
    checkers: Vec<Checker>,
    config: Config,
    _dir: tempfile::TempDir,
}

/// A config for one replica of a fleet on `redis`, cache on (60 s).
fn replica_config(hydra: &FakeHydra, redis: &RedisServer, dir: &std::path::Path, shared: bool) -> Config {
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, format!("{:064x}", rand::random::<u128>())).expect("write secret");
    let mut c = config_for(&hydra.introspection_url());
    c.introspection.timeout_ms = 1_000;
    c.introspection.cache.enabled = true;
    c.introspection.cache.ttl_ms = 60_000;
    c.cluster.redis_url = Some(redis.url());
    c.cluster.password_file = Some(redis.password_file());
    c.cluster.secret_file = Some(secret);
    c.cluster.key_prefix = format!("t{:08x}", rand::random::<u32>());
    c.cluster.shared_cache = shared;
    // Loopback Redis on a loaded CI machine: generous, still bounded.
    c.cluster.timeout_ms = 1_000;
    c.cluster.health_interval_ms = 200;
    c
}

impl Fleet {
    async fn start(shared: bool) -> Fleet {
        let redis = RedisServer::start().await;
        let hydra = FakeHydra::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = replica_config(&hydra, &redis, dir.path(), shared);
        let mut replicas = Vec::new();
        let mut checkers = Vec::new();
        for _ in 0..REPLICAS {
            let r = start_authz(&config).await;
            checkers.push(Checker::connect(r.grpc_addr).await);
            replicas.push(r);
        }
        let fleet = Fleet {
            redis,
            hydra,
            replicas,
            checkers,
            config,
            _dir: dir,
        };
        fleet.wait_subscribed(true).await;
        fleet
    }

    /// Until every replica's purge subscription is up (or down); how long it took.
    async fn wait_subscribed(&self, up: bool) -> Duration {
        let started = Instant::now();
        let want = if up { 1.0 } else { 0.0 };
        loop {
            let mut all = true;
            for r in &self.replicas {
                let s = support::scrape_parsed(r.http_addr).await;
                all &= support::metric(&s, "hydra_authz_cluster_subscribed", &[]) == want;
            }
            if all {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "subscriptions not {} after 15 s; redis log:\n{}",
                if up { "up" } else { "down" },
                self.redis.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shared-cache entries in Redis under this fleet's prefix.
    async fn shared_entries(&self) -> usize {
        let prefix = &self.config.cluster.key_prefix;
        let keys = self.redis.command(&["KEYS", &format!("{prefix}:l2:*")]).await;
        keys.matches(&format!("{prefix}:l2:")).count()
    }

    /// A token verified by replica 0 and stored in the shared cache (the
    /// only entry there).
    async fn shared_token(&self) -> String {
        let token = self.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        assert_eq!(status(&self.checkers[0], &token).await, 200);
        wait_for(|| async { self.shared_entries().await == 1 }).await;
        token
    }

    /// The HTTP status each replica gives `token` on `GET /date`.
    async fn statuses(&self, token: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for c in &self.checkers {
            out.push(status(c, token).await);
        }
        out
    }

    async fn admin(&self, i: usize) -> support::AdminClient {
        support::admin(&self.replicas[i]).await
    }

    /// `{prefix}:epoch`, the shared cache's epoch key.
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.config.cluster.key_prefix)
    }

    /// Revoke `token` at the issuer and purge it through replica 0 with
    /// Redis's epoch pinned out of range, so no epoch can start: the
    /// operator is told, and every replica that hears it suspends shared
    /// reads. Repair with `SET <epoch_key> 7`.
    async fn purge_without_a_new_epoch(&self, token: &str) {
        self.hydra.issuer.revoke_token(token);
        let pinned = self
            .redis
            .command(&["SET", &self.epoch_key(), "4503599627370496"])
            .await;
        assert_eq!(pinned, "+OK\r\n");
        let e = self
            .admin(0)
            .await
            .purge_token(purge_request(Target::Token(token.to_owned())))
            .await
            .expect_err("the operator is told no epoch started");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("no new shared-cache epoch"), "{}", e.message());
    }

    /// Until `hydra_authz_cluster_shared_reads_suspended` reads `want` on
    /// every replica (5 s at most).
    async fn wait_suspended(&self, want: f64) {
        for r in &self.replicas {
            let addr = r.http_addr;
            wait_for(|| async move { shared_reads_suspended(addr).await == want }).await;
        }
    }

    /// A real Envoy whose `hydra_authz` cluster is the whole fleet (round robin).
    async fn envoy(&self) -> hydra_authz::demo::envoy::Envoy {
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.grpc_addr.port()).collect();
        support::stack::envoy_for_ports(ports[0], self.replicas[0].http_addr.port(), None, |yaml| {
            let endpoint = |p: u16| {
                format!(
                    "              - endpoint:\n                  address:\n                    socket_address:\n                      address: 127.0.0.1\n                      port_value: {p}\n"
                )
            };
            let all: String = ports.iter().map(|&p| endpoint(p)).collect();
            assert_eq!(yaml.matches(&endpoint(ports[0])).count(), 1, "one hydra_authz endpoint");
            yaml.replace(&endpoint(ports[0]), &all)
        })
        .await
    }
}

async fn status(check: &Checker, token: &str) -> i32 {
    Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(token))]).await).http_status
}

async fn through_envoy(envoy: &hydra_authz::demo::envoy::Envoy, token: &str) -> u16 {
    support::stack::http()
        .get(format!("http://{}/date", envoy.listener))
        .bearer_auth(token)
        .send()
        .await
        .expect("request through Envoy")
        .status()
        .as_u16()
}

fn purge_request(target: Target) -> PurgeTokenRequest {
    PurgeTokenRequest { target: Some(target) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_one_replica_reaches_every_replica() {
    let fleet = Fleet::start(false).await;
    let envoy = fleet.envoy().await;
    let token = fleet.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    // Round robin: 2 requests per replica; each replica caches it once.
    for _ in 0..2 * REPLICAS {
        assert_eq!(through_envoy(&envoy, &token).await, 200);
    }
    assert_eq!(
        fleet.hydra.issuer.introspections(),
        REPLICAS as u64,
        "each replica introspected once (no shared cache)"
    );

    // Revoked at the issuer: every replica still allows it from its cache.
    fleet.hydra.issuer.revoke_token(&token);
    assert_eq!(
        fleet.statuses(&token).await,
        vec![200; REPLICAS],
        "the staleness a purge is for"
    );

    // Purged at replica 0 only.
    let started = Instant::now();
    let answer = fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Token(token.clone())))
        .await
        .expect("purge accepted")
        .into_inner();
    assert!(answer.fleet, "published to the fleet");
    assert_eq!(answer.replicas_notified, REPLICAS as u64, "every subscription got it");
    // The next request at each replica, as soon as each has heard it.
    let mut propagated = Duration::ZERO;
    for c in &fleet.checkers {
        loop {
            if status(c, &token).await == 401 {
                propagated = propagated.max(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a replica kept the purged token"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!(
        "fleet purge propagation: {:.2} ms from the admin call to the last of {REPLICAS} replicas denying",
        propagated.as_secs_f64() * 1000.0
    );
    for _ in 0..2 * REPLICAS {
        assert_eq!(through_envoy(&envoy, &token).await, 401, "no replica allows it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_subject_and_by_client_reach_every_replica() {
    let fleet = Fleet::start(false).await;
    let issuer = &fleet.hydra.issuer;
    let alice = issuer.mint_with_claims("reader", &["read_date"], serde_json::json!({"sub": "alice"}));
    let alice2 = issuer.mint_with_claims("reader", &["read_date"], serde_json::json!({"sub": "alice"}));
    let bob = issuer.mint_with_claims("reader", &["read_date"], serde_json::json!({"sub": "bob"}));
    let writer = issuer.mint("writer", &["post_echo"]).expect("mint");
    let writer_check = |c: &Checker| {
        let (c, w) = (c.clone(), writer.clone());
        async move { Answer::of(&c.check("POST", "/echo", &[("authorization", &bearer(&w))]).await).http_status }
    };
    for t in [&alice, &alice2, &bob] {
        assert_eq!(fleet.statuses(t).await, vec![200; REPLICAS]);
    }
    for c in &fleet.checkers {
        assert_eq!(writer_check(c).await, 200);
    }

    // Alice logs out: her tokens are revoked and her subject purged at replica 1.
    issuer.revoke_token(&alice);
    issuer.revoke_token(&alice2);
    fleet
        .admin(1)
        .await
        .purge_token(purge_request(Target::Subject("alice".into())))
        .await
        .expect("subject purge accepted");
    wait_for(|| async {
        fleet.statuses(&alice).await == vec![401; REPLICAS] && fleet.statuses(&alice2).await == vec![401; REPLICAS]
    })
    .await;
    // Bob is still served from every cache: nothing else was dropped.
    let before = issuer.introspections();
    assert_eq!(fleet.statuses(&bob).await, vec![200; REPLICAS]);
    assert_eq!(issuer.introspections(), before, "bob's token was not purged anywhere");

    // The writer client is deleted: purged by client id with the CLI,
    // against replica 2's config, as an operator would.
    issuer.revoke_token(&writer);
    let mut cfg = fleet.config.clone();
    cfg.server.admin_addr = fleet.replicas[2].admin_addr.expect("admin on");
    cfg.server.grpc_addr = fleet.replicas[2].grpc_addr;
    cfg.server.http_addr = fleet.replicas[2].http_addr;
    let path = fleet._dir.path().join("replica-2.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("config as TOML")).expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
        .args(["purge", "--config"])
        .arg(&path)
        .args(["--client-id", "writer"])
        .output()
        .await
        .expect("run hydra-authz purge");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "purge CLI failed: {stderr}");
    assert!(
        stderr.contains(&format!("published to the fleet ({REPLICAS} replicas notified)")),
        "{stderr}"
    );
    wait_for(|| async {
        let mut all = true;
        for c in &fleet.checkers {
            all &= writer_check(c).await == 401;
        }
        all
    })
    .await;
    let before = issuer.introspections();
    assert_eq!(fleet.statuses(&bob).await, vec![200; REPLICAS]);
    assert_eq!(issuer.introspections(), before, "other clients' tokens untouched");

    // Bad targets are refused with the reason, and purge nothing.
    let e = fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Subject(String::new())))
        .await
        .expect_err("empty subject");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Fingerprint("zz".into())))
        .await
        .expect_err("bad fingerprint");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

/// Poll `cond` until it holds (bounded: 5 s).
async fn wait_for<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "condition not met within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A replica's `hydra_authz_cluster_shared_reads_suspended` gauge.
async fn shared_reads_suspended(http_addr: std::net::SocketAddr) -> f64 {
    let s = support::scrape_parsed(http_addr).await;
    support::metric(&s, "hydra_authz_cluster_shared_reads_suspended", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_never_allows_a_revoked_token_and_the_fleet_recovers() {
    let mut fleet = Fleet::start(false).await;
    let envoy = fleet.envoy().await;
    let issuer = &fleet.hydra.issuer;
    let doomed = issuer.mint("reader", &["read_date"]).expect("mint");
    let fine = issuer.mint("reader", &["read_date"]).expect("mint");
    for t in [&doomed, &fine] {
        assert_eq!(fleet.statuses(t).await, vec![200; REPLICAS]);
    }

    // Purges so far have taken the shared epoch to 2.
    for _ in 0..2 {
        fleet
            .admin(0)
            .await
            .purge_all(PurgeAllRequest {})
            .await
            .expect("purge all");
    }
    for t in [&doomed, &fine] {
        assert_eq!(fleet.statuses(t).await, vec![200; REPLICAS]);
    }
    let epoch_key = format!("{}:epoch", fleet.config.cluster.key_prefix);

    // Redis dies while checks flow; meanwhile a token is revoked at the
    // issuer, and its purge cannot reach the fleet.
    fleet.redis.kill();
    let down_after = fleet.wait_subscribed(false).await;
    println!(
        "subscriptions seen down {:.0} ms after Redis was killed",
        down_after.as_secs_f64() * 1000.0
    );
    issuer.revoke_token(&doomed);
    let e = fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Token(doomed.clone())))
        .await
        .expect_err("the fleet cannot be told");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("purged on this replica only"), "{}", e.message());

    let (mut false_allows, mut checks) = (0, 0);
    let started = Instant::now();
    while checks < 150 && started.elapsed() < Duration::from_secs(10) {
        if through_envoy(&envoy, &doomed).await != 401 {
            false_allows += 1;
        }
        assert_eq!(through_envoy(&envoy, &fine).await, 200, "a valid token still passes");
        checks += 1;
    }
    assert_eq!(false_allows, 0, "a revoked token was allowed while Redis was down");
    assert!(checks >= 30, "too few checks ran: {checks}");
    // Nothing served from the caches meanwhile: each check was verified.
    let before = issuer.introspections();
    assert_eq!(fleet.statuses(&fine).await, vec![200; REPLICAS]);
    assert_eq!(issuer.introspections(), before + REPLICAS as u64, "cache bypassed");
    for r in &fleet.replicas {
        let ready = support::stack::http()
            .get(format!("http://{}/readyz", r.http_addr))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200, "still ready: it serves, only slower");
        let detail = ready.text().await.expect("body");
        assert!(detail.contains("purge subscription down"), "{detail}");
    }

    // Redis is back: every replica resubscribes, flushes, and caches again.
    let back = Instant::now();
    fleet.redis.restart().await;
    fleet.wait_subscribed(true).await;
    println!(
        "fleet resubscribed {:.0} ms after Redis came back",
        back.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(fleet.statuses(&fine).await, vec![200; REPLICAS]);
    let before = issuer.introspections();
    for _ in 0..3 {
        assert_eq!(fleet.statuses(&fine).await, vec![200; REPLICAS]);
    }
    assert_eq!(issuer.introspections(), before, "served from the caches again");
    assert_eq!(fleet.statuses(&doomed).await, vec![401; REPLICAS]);
    // Redis came back empty; the replicas wrote their epoch back: the
    // fleet never returns to an epoch whose entries may still be stored.
    let epoch = fleet.redis.command(&["GET", &epoch_key]).await;
    assert_eq!(epoch, "$1\r\n2\r\n", "{epoch:?}");
    // And purges flow again.
    fleet
        .admin(2)
        .await
        .purge_all(PurgeAllRequest {})
        .await
        .expect("purge all accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_time_never_an_answer() {
    let fleet = Fleet::start(true).await;
    let issuer = &fleet.hydra.issuer;
    let kept = issuer.mint("reader", &["read_date"]).expect("mint");
    let revoked = issuer.mint("reader", &["read_date"]).expect("mint");
    for t in [&kept, &revoked] {
        assert_eq!(fleet.statuses(t).await, vec![200; REPLICAS]);
    }

    // Redis stops answering (connections stay open), then a token is revoked.
    fleet.redis.freeze();
    issuer.revoke_token(&revoked);
    // Right away, before any replica has noticed: a new token's L2 lookup
    // times out (timeout_ms) and the check goes on to the issuer.
    let fresh = issuer.mint("reader", &["read_date"]).expect("mint");
    let started = Instant::now();
    assert_eq!(
        status(&fleet.checkers[0], &fresh).await,
        200,
        "Redis hung: introspected instead"
    );
    println!(
        "a new token's check with Redis hung (timeout_ms = {}): {:.0} ms",
        fleet.config.cluster.timeout_ms,
        started.elapsed().as_secs_f64() * 1000.0
    );
    // The unanswered PINGs take every replica's cache out of service.
    fleet.wait_subscribed(false).await;
    assert_eq!(
        fleet.statuses(&revoked).await,
        vec![401; REPLICAS],
        "no cache, no stale allow"
    );
    assert_eq!(fleet.statuses(&kept).await, vec![200; REPLICAS]);
    let e = fleet
        .admin(1)
        .await
        .purge_all(PurgeAllRequest {})
        .await
        .expect_err("a hung Redis cannot take a purge");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    fleet.redis.resume();
    fleet.wait_subscribed(true).await;
    assert_eq!(fleet.statuses(&kept).await, vec![200; REPLICAS]);
    assert_eq!(fleet.statuses(&revoked).await, vec![401; REPLICAS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_cache_introspects_a_token_once_across_the_fleet() {
    let fleet = Fleet::start(true).await;
    let issuer = &fleet.hydra.issuer;
    let stored = || fleet.shared_entries();
    // Tokens one after another: the first replica to see one introspects
    // it and shares it; the others take it from Redis.
    const TOKENS: usize = 5;
    for n in 0..TOKENS {
        let token = issuer.mint("reader", &["read_date"]).expect("mint");
        let before = issuer.introspections();
        assert_eq!(status(&fleet.checkers[n % REPLICAS], &token).await, 200);
        // The write is in the background: wait for it, as a later request would.
        wait_for(|| async { stored().await > n }).await;
        assert_eq!(fleet.statuses(&token).await, vec![200; REPLICAS]);
        assert_eq!(
            issuer.introspections(),
            before + 1,
            "token {n}: one introspection for the fleet"
        );
    }
    // Redis holds keyed hashes and sealed values, never a token.
    let dump = fleet.redis.command(&["KEYS", "*"]).await;
    assert!(!dump.contains("reader") || !dump.contains('.'), "{dump}");

    // All at once: at most one introspection per replica (the documented bound).
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    let before = issuer.introspections();
    fleet.hydra.set_fault(Fault::Delay(Duration::from_millis(50)));
    let all = fleet.checkers.iter().map(|c| {
        let (c, t) = (c.clone(), token.clone());
        tokio::spawn(async move { status(&c, &t).await })
    });
    for s in all.collect::<Vec<_>>() {
        assert_eq!(s.await.expect("join"), 200);
    }
    fleet.hydra.set_fault(Fault::None);
    let concurrent = issuer.introspections() - before;
    println!("shared cache: a new token sent to {REPLICAS} replicas at once cost {concurrent} introspection(s)");
    assert!((1..=REPLICAS as u64).contains(&concurrent), "{concurrent}");

    // A purge starts a new epoch: a revoked token cannot come back from L2,
    // not even to a replica that never saw it (its L1 is empty).
    issuer.revoke_token(&token);
    fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Token(token.clone())))
        .await
        .expect("purge");
    wait_for(|| async { fleet.statuses(&token).await == vec![401; REPLICAS] }).await;
    let late = start_authz(&fleet.config).await;
    let late_check = Checker::connect(late.grpc_addr).await;
    wait_subscribed_one(&late).await;
    assert_eq!(
        status(&late_check, &token).await,
        401,
        "not taken back from the shared cache"
    );
}

async fn wait_subscribed_one(r: &RunningServer) {
    wait_for(|| async {
        let s = support::scrape_parsed(r.http_addr).await;
        support::metric(&s, "hydra_authz_cluster_subscribed", &[]) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_misplaced_shared_values_are_refused() {
    let fleet = Fleet::start(true).await;
    let issuer = &fleet.hydra.issuer;
    let prefix = fleet.config.cluster.key_prefix.clone();
    let reader = issuer.mint("reader", &["read_date"]).expect("mint");
    let writer = issuer.mint("writer", &["post_echo"]).expect("mint");
    let key_of = |t: &str| {
        let s = fleet.replicas[0].live.handle().load_full();
        let key = hydra_authz::authn::cache::Purge::purge_key(
            s.engine().authenticator(),
            &hydra_authz::extract::credential::Token::new(t),
        );
        format!("{prefix}:l2:0:{}", hex::encode(key))
    };
    assert_eq!(status(&fleet.checkers[0], &reader).await, 200);
    assert_eq!(
        Answer::of(
            &fleet.checkers[0]
                .check("POST", "/echo", &[("authorization", &bearer(&writer))])
                .await
        )
        .http_status,
        200
    );
    for t in [&writer, &reader] {
        wait_for(|| async { fleet.redis.command(&["EXISTS", &key_of(t)]).await.starts_with(":1") }).await;
    }

    // Someone with write access to Redis copies the writer's sealed value
    // under the reader's key (to gain post_echo), and plants garbage.
    let writer_value = fleet.redis.command(&["GET", &key_of(&writer)]).await;
    let value = writer_value.lines().nth(1).expect("a bulk string").to_owned();
    fleet.redis.command(&["SET", &key_of(&reader), &value]).await;
    let junk = issuer.mint("reader", &["read_date"]).expect("mint");
    fleet
        .redis
        .command(&["SET", &key_of(&junk), "v1.AAAA.{\"until_ms\":99999999999999}"])
        .await;

    // A replica with an empty L1 (here 1 and 2 never saw these tokens).
    let before = issuer.introspections();
    let post = Answer::of(
        &fleet.checkers[1]
            .check("POST", "/echo", &[("authorization", &bearer(&reader))])
            .await,
    );
    assert_eq!(post.http_status, 403, "the moved value did not grant post_echo");
    assert_eq!(
        status(&fleet.checkers[2], &junk).await,
        200,
        "garbage in Redis costs a lookup, not an answer"
    );
    assert_eq!(issuer.introspections(), before + 2, "both went to the issuer");
    let s = support::scrape_parsed(fleet.replicas[1].http_addr).await;
    assert!(support::metric(&s, "hydra_authz_cluster_shared_cache_total", &[("result", "invalid")]) >= 1.0);

    // A purge message not sealed by the fleet (anyone who can PUBLISH on
    // this Redis) empties every cache and is believed in nothing, not its
    // epoch.
    let unreadable = || async {
        let mut n = Vec::new();
        for r in &fleet.replicas {
            let s = support::scrape_parsed(r.http_addr).await;
            n.push(support::metric(&s, "hydra_authz_cluster_purges_unreadable_total", &[]));
        }
        n
    };
    let channel = format!("{prefix}:purge");
    fleet
        .redis
        .command(&["PUBLISH", &channel, r#"{"op":"all","epoch":999999}"#])
        .await;
    wait_for(|| async { unreadable().await == vec![1.0; REPLICAS] }).await;
    let before = issuer.introspections();
    let shared_hits = || async {
        let s = support::scrape_parsed(fleet.replicas[0].http_addr).await;
        support::metric_opt(&s, "hydra_authz_cluster_shared_cache_total", &[("result", "hit")]).unwrap_or(0.0)
    };
    let hits = shared_hits().await;
    let post = Answer::of(
        &fleet.checkers[0]
            .check("POST", "/echo", &[("authorization", &bearer(&writer))])
            .await,
    );
    assert_eq!(post.http_status, 200);
    assert_eq!(issuer.introspections(), before, "not introspected again");
    assert_eq!(
        shared_hits().await,
        hits + 1.0,
        "flushed locally: taken from the shared cache"
    );
    // The next purge starts epoch 1, not 1,000,000.
    fleet
        .admin(0)
        .await
        .purge_token(purge_request(Target::Token(reader.clone())))
        .await
        .expect("purge");
    let epoch = fleet.redis.command(&["GET", &format!("{prefix}:epoch")]).await;
    assert_eq!(epoch, "$1\r\n1\r\n", "{epoch:?}");
    // A sealed value copied into the new epoch is refused: the MAC binds
    // it to its key, epoch included (no replay after a purge).
    let moved = key_of(&reader).replace(":l2:0:", ":l2:1:");
    fleet.redis.command(&["SET", &moved, &value]).await;
    wait_for(|| async {
        let mut all = true;
        for c in &fleet.checkers {
            let a = Answer::of(&c.check("POST", "/echo", &[("authorization", &bearer(&reader))]).await);
            all &= a.http_status == 403;
        }
        all
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_bridges_an_outage_within_its_window_only() {
    // One replica, no fleet: stale-if-error stands on its own, with the
    // cache off and with it on (its entries must expire first).
    for cache_ttl_ms in [None, Some(300)] {
        stale_if_error_scenario(cache_ttl_ms).await;
    }
}

async fn stale_if_error_scenario(cache_ttl_ms: Option<u64>) {
    let hydra = FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    config.introspection.timeout_ms = 1_000;
    config.introspection.cache.stale_if_error_ms = 2_000;
    if let Some(ttl) = cache_ttl_ms {
        config.introspection.cache.enabled = true;
        config.introspection.cache.ttl_ms = ttl;
    }
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    let stale_allows = || async {
        let s = support::scrape_parsed(server.http_addr).await;
        support::metric(&s, "hydra_authz_stale_allows_total", &[])
    };
    let kept = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let purged = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let refused = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let never = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let verified = Instant::now();
    for t in [&kept, &purged, &refused] {
        assert_eq!(status(&check, t).await, 200);
    }
    // Revoked: (after the cache lets go) seen inactive, so no stale allow may follow.
    hydra.issuer.revoke_token(&refused);
    if let Some(ttl) = cache_ttl_ms {
        tokio::time::sleep(Duration::from_millis(ttl + 50)).await;
    }
    assert_eq!(status(&check, &refused).await, 401);
    support::admin(&server)
        .await
        .purge_token(purge_request(Target::Token(purged.clone())))
        .await
        .expect("purge");

    // Hydra goes down.
    hydra.set_fault(Fault::Status(503, None));
    for n in 1..=3 {
        assert_eq!(status(&check, &kept).await, 200, "verified moments ago: bridged");
        assert_eq!(
            stale_allows().await,
            f64::from(n),
            "each one a stale allow, none cached as fresh"
        );
    }
    assert_eq!(status(&check, &purged).await, 503, "purged: never stale");
    assert_eq!(status(&check, &refused).await, 503, "seen inactive: never stale");
    assert_eq!(
        status(&check, &never).await,
        503,
        "never verified: nothing to bridge with"
    );

    // Past the window: denied (fail closed) although the token is valid.
    let window = Duration::from_millis(config.introspection.cache.stale_if_error_ms);
    tokio::time::sleep((window + Duration::from_millis(200)).saturating_sub(verified.elapsed())).await;
    assert_eq!(status(&check, &kept).await, 503, "outside the window");

    // Hydra back: allowed again, and the window starts over.
    hydra.set_fault(Fault::None);
    assert_eq!(status(&check, &kept).await, 200);
    if let Some(ttl) = cache_ttl_ms {
        tokio::time::sleep(Duration::from_millis(ttl + 50)).await;
    }
    hydra.set_fault(Fault::ResetOnAccept);
    assert_eq!(
        status(&check, &kept).await,
        200,
        "bridged again after a fresh verification"
    );
    assert_eq!(stale_allows().await, 4.0);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_mutual_tls_with_a_private_ca() {
    let pki = support::pki::Pki::new();
    let redis = RedisServer::start_tls(&pki.server_cert, &pki.server_key, &pki.ca).await;
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = replica_config(&hydra, &redis, dir.path(), false);
    assert!(config
        .cluster
        .redis_url
        .as_deref()
        .is_some_and(|u| u.starts_with("rediss://")));
    config.cluster.tls_ca_file = Some(pki.ca.clone());
    config.cluster.tls_cert_file = Some(pki.client_cert.clone());
    config.cluster.tls_key_file = Some(pki.client_key.clone());
    let a = start_authz(&config).await;
    let b = start_authz(&config).await;
    // The same, without a client certificate: Redis refuses the handshake.
    let mut no_cert = config.clone();
    no_cert.cluster.tls_cert_file = None;
    no_cert.cluster.tls_key_file = None;
    let refused = start_authz(&no_cert).await;
    for r in [&a, &b] {
        wait_subscribed_one(r).await;
    }
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let (ca, cb, cr) = (
        Checker::connect(a.grpc_addr).await,
        Checker::connect(b.grpc_addr).await,
        Checker::connect(refused.grpc_addr).await,
    );
    for c in [&ca, &cb, &cr] {
        assert_eq!(status(c, &token).await, 200);
    }
    // Purged at a, over TLS: b hears it.
    hydra.issuer.revoke_token(&token);
    let answer = support::admin(&a)
        .await
        .purge_token(purge_request(Target::Token(token.clone())))
        .await
        .expect("purge over TLS")
        .into_inner();
    assert_eq!(
        answer.replicas_notified, 2,
        "a and b; never the replica without a certificate"
    );
    wait_for(|| async { status(&cb, &token).await == 401 }).await;
    // The replica Redis refused never trusted its cache: correct all along.
    assert_eq!(status(&cr, &token).await, 401);
    let s = support::scrape_parsed(refused.http_addr).await;
    assert_eq!(support::metric(&s, "hydra_authz_cluster_subscribed", &[]), 0.0);
    assert!(
        support::metric_opt(&s, "hydra_authz_cluster_resubscribes_total", &[]).unwrap_or(0.0) == 0.0,
        "never subscribed"
    );
}

#[tokio::test]
async fn purge_all_without_a_fleet_still_says_it_is_local() {
    let (hydra, server, check) = support::authz_on_fake_hydra(|c| {
        c.introspection.cache.enabled = true;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, &token).await, 200);
    let answer = support::admin(&server)
        .await
        .purge_all(PurgeAllRequest {})
        .await
        .expect("purge")
        .into_inner();
    assert!(!answer.fleet);
    assert_eq!(answer.replicas_notified, 0);
}

/// A purge that cannot start a new shared-cache epoch (here Redis's epoch
/// was set out of range, as anyone who can write to it could) still takes
/// the token out everywhere: the message says no epoch was started, every
/// replica stops reading the shared cache, the token's shared entry is
/// deleted, and the operator is told. Once the epoch can be started again
/// (retried in the background), the shared cache is read again. Before,
/// the purged token came back from the shared cache on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_without_a_new_epoch_suspends_the_shared_cache_until_one_starts() {
    let fleet = Fleet::start(true).await;
    let issuer = &fleet.hydra.issuer;
    let stored = || fleet.shared_entries();
    let token = fleet.shared_token().await;

    fleet.purge_without_a_new_epoch(&token).await;
    // Before any check could delete it: the purge itself did, as a replica
    // started after it would never hear of it.
    assert_eq!(stored().await, 0, "a purge by token deletes its shared entry");
    wait_for(|| async { fleet.statuses(&token).await == vec![401; REPLICAS] }).await;
    let fresh = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(fleet.statuses(&fresh).await, vec![200; REPLICAS], "checks go on");
    let suspended = |r: &RunningServer| {
        let addr = r.http_addr;
        async move {
            let s = support::scrape_parsed(addr).await;
            support::metric_opt(&s, "hydra_authz_cluster_shared_cache_total", &[("result", "suspended")]).unwrap_or(0.0)
        }
    };
    for r in &fleet.replicas {
        assert!(suspended(r).await >= 1.0, "shared reads suspended on every replica");
        assert_eq!(shared_reads_suspended(r.http_addr).await, 1.0, "and the gauge says so");
    }

    // Redis's epoch repaired: the background step succeeds, the purge goes
    // out again with the new epoch, and the shared cache is read again.
    fleet.redis.command(&["SET", &fleet.epoch_key(), "7"]).await;
    let started = Instant::now();
    loop {
        let next = issuer.mint("reader", &["read_date"]).expect("mint");
        assert_eq!(status(&fleet.checkers[0], &next).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = issuer.introspections();
        assert_eq!(status(&fleet.checkers[1], &next).await, 200);
        if issuer.introspections() == before {
            break; // replica 1 took it from the shared cache
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the shared cache stayed suspended"
        );
    }
    assert_eq!(
        fleet.statuses(&token).await,
        vec![401; REPLICAS],
        "the purged token stays out"
    );
    fleet.wait_suspended(0.0).await;
}

/// A suspension of shared reads shows (gauge, `/readyz` detail) while no
/// epoch can be started; once one can, every replica resumes (through the
/// purge's retry, or its own step when it reconnects), and the purged
/// token stays out throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_read_suspension_shows_until_an_epoch_starts() {
    let fleet = Fleet::start(true).await;
    let token = fleet.shared_token().await;
    fleet.purge_without_a_new_epoch(&token).await;
    let readyz = |addr: std::net::SocketAddr| async move {
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let r = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .expect("readyz");
        r.text().await.expect("body")
    };
    fleet.wait_suspended(1.0).await;
    for r in &fleet.replicas {
        let detail = readyz(r.http_addr).await;
        assert!(detail.contains("shared reads suspended"), "{detail}");
    }
    // Redis's epoch repaired: a step succeeds (the purge's retry, or a
    // replica's own on its next reconnect) and reads resume everywhere.
    fleet.redis.command(&["SET", &fleet.epoch_key(), "7"]).await;
    fleet.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    fleet.wait_suspended(0.0).await;
    for r in &fleet.replicas {
        assert!(!readyz(r.http_addr).await.contains("shared reads suspended"));
    }
    fleet.wait_subscribed(true).await;
    for c in &fleet.checkers {
        assert_eq!(status(c, &token).await, 401, "the purged token stays out");
    }
}

/// A suspension nobody's purge will end (a captured epoch-0 purge message
/// published again, after its purge's own retry has long finished) ends on
/// each replica when it resubscribes: it steps an epoch itself and reads
/// from there. Until then it stays, and the purged token stays out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ends_a_suspension_by_its_own_step_when_it_resubscribes() {
    let fleet = Fleet::start(true).await;
    let token = fleet.shared_token().await;
    let prefix = fleet.config.cluster.key_prefix.clone();
    let mut channel = fleet.redis.subscribe(&format!("{prefix}:purge")).await;
    fleet.purge_without_a_new_epoch(&token).await;
    // The epoch-0 message that purge sent.
    let epoch_zero = channel.next().await;
    // Repaired: the purge's retry starts an epoch and everyone resumes.
    fleet.redis.command(&["SET", &fleet.epoch_key(), "7"]).await;
    fleet.wait_suspended(0.0).await;
    // The captured message again: every replica suspends, and no retry
    // is running that would end it.
    let published = fleet
        .redis
        .command(&["PUBLISH", &format!("{prefix}:purge"), &epoch_zero])
        .await;
    assert_eq!(
        published,
        format!(":{}\r\n", REPLICAS + 1),
        "every replica (and our subscriber) heard it"
    );
    fleet.wait_suspended(1.0).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for r in &fleet.replicas {
        assert_eq!(shared_reads_suspended(r.http_addr).await, 1.0, "nothing else ends it");
    }
    // Their subscriptions drop and come back: each steps an epoch itself.
    fleet.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    fleet.wait_suspended(0.0).await;
    fleet.wait_subscribed(true).await;
    assert_eq!(
        fleet.statuses(&token).await,
        vec![401; REPLICAS],
        "the purged token stays out"
    );
}

/// The issuer refuses a token whose shared entry this replica could not
/// read (Redis stalled): the entry is removed, so the next read, once
/// Redis answers again, cannot allow what the issuer just refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_an_unread_shared_entry_removes_it() {
    let fleet = Fleet::start(true).await;
    let issuer = &fleet.hydra.issuer;
    let stored = || fleet.shared_entries();
    let token = fleet.shared_token().await;

    // Revoked at the issuer without a purge; then Redis stalls for a while.
    issuer.revoke_token(&token);
    let paused = Instant::now();
    fleet.redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]).await;
    assert_eq!(status(&fleet.checkers[1], &token).await, 401, "the issuer says no");
    tokio::time::sleep(Duration::from_millis(1_600).saturating_sub(paused.elapsed())).await;
    fleet.wait_subscribed(true).await;
    wait_for(|| async { stored().await == 0 }).await;
    assert_eq!(fleet.statuses(&token).await, vec![401; REPLICAS]);
}
