//! The harness's own servers behave as the other tests assume.

use crate::harness::{Client, Kind, Moto, Upstream};
use crate::transparency::on_each;

async fn each_user_reaches_own_calendar_and_not_another(kind: Kind) {
    let up = Upstream::get(kind);
    let http = Client::new();
    for (user, password) in crate::harness::upstream::USERS {
        let reply = http
            .request("PROPFIND", &up.calendar_url(user))
            .basic(user, password)
            .header("Depth", "0")
            .send()
            .await;
        assert_eq!(reply.status, 207, "{} {user}: {reply:?}", up.name());
    }
    let reply = http
        .request("PROPFIND", &up.calendar_url("user1"))
        .basic("user2", up.password("user2"))
        .header("Depth", "0")
        .send()
        .await;
    // Radicale answers 403; Xandikos 0.4.10 answers 500 (its ForbiddenError
    // escapes the handler); Baïkal answers 207 with every property in a 403
    // propstat. Either way user2 never sees user1's calendar.
    if reply.status == 207 {
        let text = reply.text();
        assert!(
            text.contains("403 Forbidden") && !text.contains("200 OK"),
            "{}: user2 read user1's calendar: {reply:?}",
            up.name()
        );
    } else {
        assert!(
            reply.status.is_client_error() || reply.status.is_server_error(),
            "{}: user2 read user1's calendar: {reply:?}",
            up.name()
        );
    }
    let reply = http
        .request("PROPFIND", &up.calendar_url("user1"))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(reply.status, 401, "{}: {reply:?}", up.name());
}

on_each!(each_user_reaches_own_calendar_and_not_another: upstream_serves_each_users_calendar_to_that_user_only);

#[tokio::test]
async fn moto_creates_buckets_that_start_empty() {
    let moto = Moto::shared();
    let bucket = moto.new_bucket("selftest");
    assert_eq!(moto.keys(&bucket), Vec::<String>::new());
}
