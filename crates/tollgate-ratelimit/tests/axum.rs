//! The layer inside an axum router, as the gateway and embedders use it: the response
//! type satisfies `route_service`, refusals come back as responses.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use tollgate_core::{Limits, Principal};
use tollgate_ratelimit::{RateLimitConfig, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test]
async fn the_layer_serves_inside_an_axum_router_and_refuses_with_a_429() {
    let mut config = RateLimitConfig::default();
    config.global.rpm = Some(1);
    let relay = ServiceBuilder::new()
        .map_request(|mut req: Request<Body>| {
            // What KeyAuthLayer would leave.
            req.extensions_mut().insert(Principal {
                key_id: 1,
                account_id: Arc::from("acme"),
                name: None,
                allowed_models: None,
                limits: Limits::default(),
            });
            req
        })
        .layer(RateLimitLayer::from_config(&config).expect("valid"))
        .service(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(Body::from("{}")))
        }));
    let app: Router = Router::new().route_service("/v1/messages", relay);
    let send = || {
        app.clone().oneshot(
            Request::post("/v1/messages")
                .body(Body::empty())
                .expect("valid"),
        )
    };
    let ok = send().await.expect("infallible");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["anthropic-ratelimit-requests-remaining"], "0");
    let refused = send().await.expect("infallible");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "60");
}
