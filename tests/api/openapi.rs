//! `GET /openapi.json` describes exactly the routes `configure()` registers.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

/// Routes and methods as registered in `configure()`, read from its source so
/// that a route added there without a `#[utoipa::path]` fails this test.
fn registered_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../../src/http/mod.rs");
    let body = src
        .split("pub fn configure(")
        .nth(1)
        .expect("configure() in src/http/mod.rs");
    let body = &body[..body.find("\n}\n").expect("end of configure()")];
    let mut out = BTreeSet::new();
    let mut path: Option<String> = None;
    for line in body.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("web::resource(\"") {
            path = Some(rest[..rest.find('"').unwrap()].to_string());
        } else if let Some(rest) = line.strip_prefix(".route(web::") {
            let method = &rest[..rest.find('(').unwrap()];
            let p = path.clone().expect("a route inside a resource");
            out.insert((p, method.to_string()));
        }
    }
    assert!(out.len() >= 10, "parsed too few routes: {out:?}");
    out
}

async fn document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.json().await.unwrap()
}

#[tokio::test]
async fn openapi_describes_every_registered_route_and_nothing_else() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                described.insert((path.clone(), method.clone()));
            }
        }
    }
    assert_eq!(described, registered_routes());
    // Each described operation is really served: not the router's 404/405.
    for (path, method) in &described {
        let url = format!("{}{}", app.address, path.replace("{id}", "zz-none"));
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let r = app.client.request(m, &url).send().await.unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        if r.status() == 404 {
            let p: Value = r.json().await.unwrap();
            assert_ne!(p["type"], "/problems/not-found", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_problems_and_v1_needs_a_bearer_key() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{problem}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().expect("responses");
            let mut codes: Vec<&str> = vec!["404", "405"];
            if path.starts_with("/v1/") {
                codes.extend(["401", "403", "429", "503"]);
                assert_eq!(
                    op["security"][0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path}"
                );
            }
            if op.get("requestBody").is_some() {
                codes.extend(["413", "415"]);
            }
            for code in codes {
                let r = &responses
                    .get(code)
                    .unwrap_or_else(|| panic!("{method} {path} does not document {code}"));
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {code}"
                );
            }
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path} has no success response"
            );
        }
    }
    // Request bodies are described by the DTOs' schemas.
    let offers = &doc["paths"]["/v1/offers"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(offers, "#/components/schemas/OfferRequestDto");
    let dto = &doc["components"]["schemas"]["OfferRequestDto"];
    assert_eq!(dto["additionalProperties"], false, "{dto}");
    // Every field an offer carries is documented, `propensity` included.
    let offer = &doc["components"]["schemas"]["OfferOut"];
    for k in [
        "offer_id",
        "category",
        "title",
        "price",
        "points_price",
        "score",
        "expected_value",
        "reasons",
        "expires_at",
        "token",
        "propensity",
    ] {
        assert!(
            offer["properties"][k].is_object(),
            "OfferOut lacks {k}: {offer}"
        );
    }
    // Problems document the `errors` extension member.
    let problem = &doc["components"]["schemas"]["Problem"];
    assert!(problem["properties"]["errors"].is_object(), "{problem}");
    assert!(doc["components"]["schemas"]["ProblemField"].is_object());
}

/// Every schema reference resolves (nested types such as a member's
/// `monthly` history are collected into the components).
#[tokio::test]
async fn every_schema_reference_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.contains(&"#/components/schemas/MonthRecord"), "{all:?}");
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} dangles"
        );
    }
}
