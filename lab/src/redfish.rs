//! One Redfish service in front of every lab machine.
//!
//! Serves what provisioning clients use: the service root (no authentication), sessions,
//! Systems with power state, `ComputerSystem.Reset` with its allowable values and boot
//! override, Managers with a CD VirtualMedia device (actions and PATCH), inventory
//! (EthernetInterfaces, Processors, Memory, Storage and Drives, Bios) and Chassis. Requests
//! authenticate with Basic credentials or an `X-Auth-Token` from the SessionService; anything
//! else gets 401. Injected BMC faults apply per machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::machine::{BOOT_TARGETS, BootOverride, Machine, PowerState, RESET_TYPES};

/// BMC login.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// State shared by the Redfish handlers.
pub struct Redfish {
    machines: Vec<Arc<Machine>>,
    credentials: Credentials,
    /// Session token → session.
    sessions: Mutex<HashMap<String, Session>>,
}

/// An open Redfish session.
struct Session {
    id: String,
    opened: Instant,
}

type Shared = Arc<Redfish>;

/// The Redfish router for `machines`.
pub fn router(machines: Vec<Arc<Machine>>, credentials: Credentials) -> axum::Router {
    let state = Arc::new(Redfish {
        machines,
        credentials,
        sessions: Mutex::new(HashMap::new()),
    });
    let protected = axum::Router::new()
        .route("/redfish/v1/SessionService", get(session_service))
        .route(
            "/redfish/v1/SessionService/Sessions",
            get(sessions).post(create_session),
        )
        .route(
            "/redfish/v1/SessionService/Sessions/{id}",
            get(session).delete(delete_session),
        )
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/{id}", get(system).patch(patch_system))
        .route(
            "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/Systems/{id}/EthernetInterfaces", get(nics))
        .route(
            "/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}",
            get(nic),
        )
        .route("/redfish/v1/Systems/{id}/Processors", get(processors))
        .route("/redfish/v1/Systems/{id}/Processors/{cpu}", get(processor))
        .route("/redfish/v1/Systems/{id}/Memory", get(memory_collection))
        .route("/redfish/v1/Systems/{id}/Memory/{dimm}", get(memory))
        .route("/redfish/v1/Systems/{id}/Storage", get(storage_collection))
        .route("/redfish/v1/Systems/{id}/Storage/1", get(storage))
        .route(
            "/redfish/v1/Systems/{id}/Storage/1/Drives/{drive}",
            get(drive),
        )
        .route("/redfish/v1/Systems/{id}/Bios", get(bios))
        .route("/redfish/v1/Managers", get(managers))
        .route("/redfish/v1/Managers/{id}", get(manager))
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia",
            get(media_collection),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/Cd",
            get(media).patch(patch_media),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
            post(insert_media),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia",
            post(eject_media),
        )
        .route("/redfish/v1/Chassis", get(chassis_collection))
        .route("/redfish/v1/Chassis/{id}", get(chassis))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    axum::Router::new()
        .route(
            "/redfish",
            get(|| async { Json(json!({"v1": "/redfish/v1/"})) }),
        )
        .route("/redfish/v1", get(service_root))
        .route("/redfish/v1/", get(service_root))
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inject_faults,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": "Base.1.0.GeneralError", "message": message,
        "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError", "Message": message}]}});
    (status, Json(body)).into_response()
}

/// A refused request; kept small so results carrying it stay cheap.
struct Failure(StatusCode, &'static str);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "authentication required");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ingot lab\""),
    );
    response
}

impl Redfish {
    fn machine(&self, id: &str) -> Result<&Arc<Machine>, Failure> {
        self.machines
            .iter()
            .find(|m| m.id == id)
            .ok_or(Failure(StatusCode::NOT_FOUND, "no such resource"))
    }

    fn credentials_match(&self, username: &str, password: &str) -> bool {
        let user: bool = username
            .as_bytes()
            .ct_eq(self.credentials.username.as_bytes())
            .into();
        let pass: bool = password
            .as_bytes()
            .ct_eq(self.credentials.password.as_bytes())
            .into();
        user & pass
    }

    fn session_opened(&self, token: &str) -> Option<Instant> {
        self.sessions
            .lock()
            .ok()
            .and_then(|sessions| sessions.get(token).map(|session| session.opened))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(token) = session_token(headers) {
            return self.session_opened(token).is_some();
        }
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok());
        basic
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(u, p)| self.credentials_match(u, p))
            })
            .unwrap_or(false)
    }
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-auth-token").and_then(|v| v.to_str().ok())
}

async fn authenticate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    // Logging in is the one protected-path request that carries no credentials yet.
    let login = request.method() == axum::http::Method::POST
        && request.uri().path() == "/redfish/v1/SessionService/Sessions";
    if !login && !state.authorized(request.headers()) {
        return unauthorized();
    }
    next.run(request).await
}

/// Counts the request on the machine it addresses (Systems/{id} or Managers/{id}) and applies
/// that machine's faults.
async fn inject_faults(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut segments = path
        .split('/')
        .skip_while(|s| *s != "Systems" && *s != "Managers")
        .skip(1);
    let machine = segments
        .next()
        .and_then(|id| state.machines.iter().find(|m| m.id == id));
    if let Some(machine) = machine {
        machine.count_bmc_request();
        let faults = machine.faults();
        if faults.bmc_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.bmc_delay_ms)).await;
        }
        if faults.bmc_unreachable {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "BMC unreachable (injected fault)",
            );
        }
        if faults.bmc_internal_error {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "BMC internal error (injected fault)",
            );
        }
        let opened = session_token(request.headers()).and_then(|t| state.session_opened(t));
        if opened.is_some_and(|opened| machine.session_dropped(opened)) {
            return unauthorized();
        }
    }
    next.run(request).await
}

async fn service_root() -> Json<Value> {
    Json(json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "Id": "RootService",
        "Name": "ingot lab Redfish service",
        "RedfishVersion": "1.15.0",
        "Vendor": "ingot lab",
        "Product": "ingot virtual BMC",
        "UUID": "7f9e4c1e-0000-4000-8000-000000000001",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "Managers": {"@odata.id": "/redfish/v1/Managers"},
        "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
    }))
}

async fn session_service() -> Json<Value> {
    Json(json!({
        "@odata.id": "/redfish/v1/SessionService",
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": 1800,
        "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"},
    }))
}

async fn create_session(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let username = body["UserName"].as_str().unwrap_or_default();
    let password = body["Password"].as_str().unwrap_or_default();
    if !state.credentials_match(username, password) {
        return unauthorized();
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let token = uuid::Uuid::new_v4().simple().to_string();
    if let Ok(mut sessions) = state.sessions.lock() {
        let session = Session {
            id: id.clone(),
            opened: Instant::now(),
        };
        sessions.insert(token.clone(), session);
    }
    let location = format!("/redfish/v1/SessionService/Sessions/{id}");
    let body = json!({"@odata.id": location, "Id": id, "UserName": username});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let (Ok(token), Ok(location)) = (
        HeaderValue::from_str(&token),
        HeaderValue::from_str(&location),
    ) {
        response.headers_mut().insert("X-Auth-Token", token);
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn sessions(State(state): State<Shared>) -> Json<Value> {
    let ids: Vec<String> = state
        .sessions
        .lock()
        .map(|s| s.values().map(|session| session.id.clone()).collect())
        .unwrap_or_default();
    let members: Vec<Value> = ids
        .iter()
        .map(|id| json!({"@odata.id": format!("/redfish/v1/SessionService/Sessions/{id}")}))
        .collect();
    collection("/redfish/v1/SessionService/Sessions", "Sessions", members)
}

async fn session(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let known = state
        .sessions
        .lock()
        .is_ok_and(|s| s.values().any(|session| session.id == id));
    if !known {
        return error(StatusCode::NOT_FOUND, "no such session");
    }
    Json(json!({"@odata.id": format!("/redfish/v1/SessionService/Sessions/{id}"), "Id": id}))
        .into_response()
}

async fn delete_session(State(state): State<Shared>, Path(id): Path<String>) -> StatusCode {
    let Ok(mut sessions) = state.sessions.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let before = sessions.len();
    sessions.retain(|_, session| session.id != id);
    if sessions.len() < before {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn collection(path: &str, name: &str, members: Vec<Value>) -> Json<Value> {
    Json(json!({
        "@odata.id": path,
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members,
    }))
}

fn member_links(state: &Redfish, prefix: &str) -> Vec<Value> {
    state
        .machines
        .iter()
        .map(|m| json!({"@odata.id": format!("{prefix}/{}", m.id)}))
        .collect()
}

async fn systems(State(state): State<Shared>) -> Json<Value> {
    collection(
        "/redfish/v1/Systems",
        "Computer System Collection",
        member_links(&state, "/redfish/v1/Systems"),
    )
}

fn power_name(power: PowerState) -> &'static str {
    match power {
        PowerState::Off => "Off",
        PowerState::PoweringOn => "PoweringOn",
        PowerState::On => "On",
        PowerState::PoweringOff => "PoweringOff",
    }
}

async fn system(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let status = machine.status();
    let details = machine.details();
    let base = format!("/redfish/v1/Systems/{id}");
    let boot_progress = match &status.activity {
        crate::machine::Activity::Agent { .. }
        | crate::machine::Activity::BootedFromDisk { .. }
        | crate::machine::Activity::LiveIso { .. } => "OSRunning",
        crate::machine::Activity::Booting => "SystemHardwareInitializationComplete",
        _ => "None",
    };
    let cpu = &details.cpu;
    Json(json!({
        "@odata.id": base,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id,
        "Name": id,
        "UUID": machine.uuid,
        "Manufacturer": details.system_vendor.manufacturer,
        "Model": details.system_vendor.product_name,
        "SerialNumber": details.system_vendor.serial_number,
        "SystemType": "Physical",
        "PowerState": power_name(status.power),
        "Status": {"State": "Enabled", "Health": "OK"},
        "BiosVersion": details.firmware.bios.version,
        "ProcessorSummary": {"Count": cpu.count, "Model": cpu.model},
        "MemorySummary": {"TotalSystemMemoryGiB": details.ram_mebibytes as f64 / 1024.0},
        "Boot": {
            "BootSourceOverrideTarget": status.boot.boot_source_override_target,
            "BootSourceOverrideEnabled": status.boot.boot_source_override_enabled,
            "BootSourceOverrideMode": status.boot.boot_source_override_mode,
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
        },
        "BootProgress": {"LastState": boot_progress},
        "Oem": {"IngotLab": {"Activity": status.activity}},
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("{base}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": RESET_TYPES,
        }},
        "EthernetInterfaces": {"@odata.id": format!("{base}/EthernetInterfaces")},
        "Processors": {"@odata.id": format!("{base}/Processors")},
        "Memory": {"@odata.id": format!("{base}/Memory")},
        "Storage": {"@odata.id": format!("{base}/Storage")},
        "Bios": {"@odata.id": format!("{base}/Bios")},
        "Links": {"ManagedBy": [{"@odata.id": format!("/redfish/v1/Managers/{id}")}],
                  "Chassis": [{"@odata.id": format!("/redfish/v1/Chassis/{id}")}]},
    }))
    .into_response()
}

async fn patch_system(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let Some(boot) = body.get("Boot") else {
        return error(StatusCode::BAD_REQUEST, "only Boot can be changed");
    };
    let mut current = machine.status().boot;
    let field = |name: &str, allowed: &[&str], slot: &mut String| -> Result<(), String> {
        let Some(value) = boot.get(name) else {
            return Ok(());
        };
        match value.as_str().filter(|v| allowed.contains(v)) {
            Some(value) => {
                *slot = value.to_owned();
                Ok(())
            }
            None => Err(format!("{name} must be one of {allowed:?}")),
        }
    };
    let applied = field(
        "BootSourceOverrideTarget",
        &BOOT_TARGETS,
        &mut current.boot_source_override_target,
    )
    .and_then(|()| {
        field(
            "BootSourceOverrideEnabled",
            &["Disabled", "Once", "Continuous"],
            &mut current.boot_source_override_enabled,
        )
    })
    .and_then(|()| {
        field(
            "BootSourceOverrideMode",
            &["UEFI", "Legacy"],
            &mut current.boot_source_override_mode,
        )
    });
    if let Err(message) = applied {
        return error(StatusCode::BAD_REQUEST, &message);
    }
    machine.set_boot(BootOverride { ..current });
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let reset_type = body["ResetType"].as_str().unwrap_or_default();
    match machine.reset(reset_type) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Runs `f` on the machine of the path, or answers 404.
fn with_machine(state: &Redfish, id: &str, f: impl FnOnce(&Machine, &str) -> Value) -> Response {
    match state.machine(id) {
        Ok(machine) => Json(f(machine, &format!("/redfish/v1/Systems/{id}"))).into_response(),
        Err(failure) => failure.into_response(),
    }
}

fn numbered_members(base: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|n| json!({"@odata.id": format!("{base}/{}", n + 1)}))
        .collect()
}

/// Resolves a 1-based member index from a path segment.
fn member_index(segment: &str, count: usize) -> Option<usize> {
    segment
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=count).contains(n))
        .map(|n| n - 1)
}

async fn nics(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |m, base| {
        let path = format!("{base}/EthernetInterfaces");
        collection(
            &path,
            "Ethernet Interfaces",
            numbered_members(&path, m.details().nics.len()),
        )
        .0
    })
}

async fn nic(State(state): State<Shared>, Path((id, nic)): Path<(String, String)>) -> Response {
    let Ok(machine) = state.machine(&id) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let Some(index) = member_index(&nic, machine.details().nics.len()) else {
        return error(StatusCode::NOT_FOUND, "no such interface");
    };
    let nic_details = &machine.details().nics[index];
    Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}"),
        "Id": nic, "Name": nic_details.name,
        "MACAddress": nic_details.mac, "PermanentMACAddress": nic_details.mac,
        "SpeedMbps": nic_details.speed_gbps * 1000, "LinkStatus": "LinkUp",
        "Status": {"State": "Enabled", "Health": "OK"},
    }))
    .into_response()
}

async fn processors(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |_, base| {
        let path = format!("{base}/Processors");
        collection(&path, "Processors", numbered_members(&path, 1)).0
    })
}

async fn processor(
    State(state): State<Shared>,
    Path((id, cpu)): Path<(String, String)>,
) -> Response {
    if cpu != "1" {
        return error(StatusCode::NOT_FOUND, "no such processor");
    }
    with_machine(&state, &id, |m, base| {
        let cpu = &m.details().cpu;
        json!({"@odata.id": format!("{base}/Processors/1"), "Id": "1", "Model": cpu.model,
               "TotalThreads": cpu.count, "MaxSpeedMHz": cpu.clock_megahertz,
               "ProcessorArchitecture": "x86", "InstructionSet": "x86-64"})
    })
}

async fn memory_collection(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |_, base| {
        let path = format!("{base}/Memory");
        collection(&path, "Memory", numbered_members(&path, 1)).0
    })
}

async fn memory(State(state): State<Shared>, Path((id, dimm)): Path<(String, String)>) -> Response {
    if dimm != "1" {
        return error(StatusCode::NOT_FOUND, "no such memory module");
    }
    with_machine(&state, &id, |m, base| {
        json!({"@odata.id": format!("{base}/Memory/1"), "Id": "1", "CapacityMiB": m.details().ram_mebibytes,
               "MemoryDeviceType": "DDR4", "OperatingSpeedMhz": 3200})
    })
}

async fn storage_collection(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |_, base| {
        let path = format!("{base}/Storage");
        collection(&path, "Storage", numbered_members(&path, 1)).0
    })
}

async fn storage(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |m, base| {
        let drives = numbered_members(
            &format!("{base}/Storage/1/Drives"),
            m.details().storage.len(),
        );
        json!({"@odata.id": format!("{base}/Storage/1"), "Id": "1", "Name": "Storage Controller",
               "Drives@odata.count": drives.len(), "Drives": drives,
               "StorageControllers": [{"MemberId": "0", "Name": "AHCI", "SupportedDeviceProtocols": ["SATA"]}]})
    })
}

async fn drive(State(state): State<Shared>, Path((id, drive)): Path<(String, String)>) -> Response {
    let Ok(machine) = state.machine(&id) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let Some(index) = member_index(&drive, machine.details().storage.len()) else {
        return error(StatusCode::NOT_FOUND, "no such drive");
    };
    let disk = &machine.details().storage[index];
    Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}/Storage/1/Drives/{drive}"),
        "Id": drive, "Name": disk.device_name(),
        "CapacityBytes": disk.size_bytes, "MediaType": if disk.rotational { "HDD" } else { "SSD" },
        "Protocol": "SATA", "Manufacturer": disk.vendor, "Model": disk.model, "SerialNumber": disk.serial_number,
        "Identifiers": [{"DurableNameFormat": "NAA", "DurableName": disk.wwn}],
        "Status": {"State": "Enabled", "Health": "OK"},
    }))
    .into_response()
}

async fn bios(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    with_machine(&state, &id, |m, base| {
        json!({"@odata.id": format!("{base}/Bios"), "Id": "Bios", "AttributeRegistry": "BiosAttributeRegistry.v1_0_0",
               "Attributes": {"BootMode": "Uefi", "ProcVirtualization": "Enabled", "SriovGlobalEnable": "Disabled",
                              "BiosVersion": m.details().firmware.bios.version}})
    })
}

async fn managers(State(state): State<Shared>) -> Json<Value> {
    collection(
        "/redfish/v1/Managers",
        "Manager Collection",
        member_links(&state, "/redfish/v1/Managers"),
    )
}

async fn manager(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match state.machine(&id) {
        Ok(_) => Json(json!({
            "@odata.id": format!("/redfish/v1/Managers/{id}"), "Id": id, "Name": format!("{id} BMC"),
            "ManagerType": "BMC", "FirmwareVersion": "1.0.0", "Model": "ingot virtual BMC",
            "VirtualMedia": {"@odata.id": format!("/redfish/v1/Managers/{id}/VirtualMedia")},
            "Links": {"ManagerForServers": [{"@odata.id": format!("/redfish/v1/Systems/{id}")}]},
        }))
        .into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn media_collection(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match state.machine(&id) {
        Ok(_) => {
            let path = format!("/redfish/v1/Managers/{id}/VirtualMedia");
            collection(
                &path,
                "Virtual Media",
                vec![json!({"@odata.id": format!("{path}/Cd")})],
            )
            .into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

async fn media(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let image = machine.status().media;
    let base = format!("/redfish/v1/Managers/{id}/VirtualMedia/Cd");
    Json(json!({
        "@odata.id": base, "Id": "Cd", "Name": "Virtual CD",
        "MediaTypes": ["CD", "DVD"], "Image": image, "Inserted": image.is_some(), "WriteProtected": true,
        "ConnectedVia": if image.is_some() { "URI" } else { "NotConnected" },
        "Actions": {
            "#VirtualMedia.InsertMedia": {"target": format!("{base}/Actions/VirtualMedia.InsertMedia")},
            "#VirtualMedia.EjectMedia": {"target": format!("{base}/Actions/VirtualMedia.EjectMedia")},
        },
    }))
    .into_response()
}

async fn insert_media(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let Some(image) = body["Image"]
        .as_str()
        .filter(|i| i.starts_with("http://") || i.starts_with("https://"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "Image must be an http or https URL",
        );
    };
    if machine.status().media.is_some() {
        return error(
            StatusCode::CONFLICT,
            "media already inserted; eject it first",
        );
    }
    machine.insert_media(image.to_owned());
    StatusCode::NO_CONTENT.into_response()
}

async fn eject_media(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    if machine.status().media.is_none() {
        return error(StatusCode::BAD_REQUEST, "no media is inserted");
    }
    machine.eject_media();
    StatusCode::NO_CONTENT.into_response()
}

async fn patch_media(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    match (
        body.get("Image").and_then(Value::as_str),
        body.get("Inserted").and_then(Value::as_bool),
    ) {
        (Some(image), _) if image.starts_with("http://") || image.starts_with("https://") => {
            machine.insert_media(image.to_owned())
        }
        (_, Some(false)) => machine.eject_media(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "set Image to an http(s) URL, or Inserted to false",
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn chassis_collection(State(state): State<Shared>) -> Json<Value> {
    collection(
        "/redfish/v1/Chassis",
        "Chassis Collection",
        member_links(&state, "/redfish/v1/Chassis"),
    )
}

async fn chassis(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let machine = match state.machine(&id) {
        Ok(machine) => machine,
        Err(failure) => return failure.into_response(),
    };
    let vendor = &machine.details().system_vendor;
    Json(json!({
        "@odata.id": format!("/redfish/v1/Chassis/{id}"), "Id": id, "ChassisType": "RackMount",
        "Manufacturer": vendor.manufacturer, "Model": vendor.product_name, "SerialNumber": vendor.serial_number,
        "PowerState": power_name(machine.status().power),
        "Links": {"ComputerSystems": [{"@odata.id": format!("/redfish/v1/Systems/{id}")}]},
    }))
    .into_response()
}
