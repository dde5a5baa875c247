//! GeoIP lookups over MaxMind DB files: country (City or Country db),
//! autonomous system (ASN db) and anonymous-network flags (Anonymous-IP db).
//!
//! Each database is optional. Each is opened and fully verified at build
//! time: a corrupt file (bad node count, broken data pointers) is refused
//! with an error that names the file, so it fails at `ztgate check` rather
//! than at the first lookup. [`GeoIp::reload`] reopens every file and swaps
//! each one atomically (`ArcSwap`): lookups in flight keep the old reader,
//! and a file that fails to open or verify leaves the old one in service.
//!
//! An address that is not in a database is *unknown* (`None` / no flags),
//! never an error: private and loopback ranges are in no database.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use maxminddb::{MaxMindDbError, PathElement, Reader};

/// Which of the three databases a file is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// GeoIP2/GeoLite2 City or Country (we read only the country).
    Location,
    /// GeoLite2 ASN (or GeoIP2 ISP, which has the same fields).
    Asn,
    /// GeoIP2 Anonymous-IP.
    AnonymousIp,
}

impl DbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DbKind::Location => "City or Country",
            DbKind::Asn => "ASN",
            DbKind::AnonymousIp => "Anonymous-IP",
        }
    }

    /// Whether the file's `database_type` metadata fits this slot; stops an
    /// ASN db configured as the country db from silently giving "unknown".
    fn accepts(self, database_type: &str) -> bool {
        match self {
            DbKind::Location => ["City", "Country", "Enterprise"]
                .iter()
                .any(|k| database_type.contains(k)),
            DbKind::Asn => database_type.contains("ASN") || database_type.contains("ISP"),
            DbKind::AnonymousIp => database_type.contains("Anonymous-IP"),
        }
    }
}

/// Why a database could not be opened. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot read {kind} database {}: {source}", path.display())]
    Read {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} database {} is corrupt: {message}", path.display())]
    Corrupt {
        kind: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{} is a `{found}` database, expected {expected}", path.display())]
    WrongType {
        expected: &'static str,
        path: PathBuf,
        found: String,
    },
}

/// Anonymous-network flags of an address (all false when not listed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnonymousFlags {
    pub anonymous: bool,
    pub vpn: bool,
    pub tor: bool,
    pub hosting: bool,
    pub public_proxy: bool,
    pub residential_proxy: bool,
}

impl AnonymousFlags {
    /// The categories flagged, by their config names (as in
    /// `device.anonymous_networks.deny`).
    pub fn categories(&self) -> Vec<&'static str> {
        [
            (self.anonymous, "anonymous"),
            (self.vpn, "vpn"),
            (self.tor, "tor"),
            (self.hosting, "hosting"),
            (self.public_proxy, "public_proxy"),
            (self.residential_proxy, "residential_proxy"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What the databases say about one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code, `None` when unknown.
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub anonymous: AnonymousFlags,
}

/// One configured database file and the reader now in service.
struct Slot {
    kind: DbKind,
    path: PathBuf,
    reader: ArcSwap<Reader<Vec<u8>>>,
}

impl Slot {
    fn open(kind: DbKind, path: PathBuf) -> Result<Self, GeoIpError> {
        let reader = open_verified(kind, &path)?;
        Ok(Self {
            kind,
            path,
            reader: ArcSwap::from_pointee(reader),
        })
    }
}

/// Read the whole file, check its type and verify every node and record.
///
/// Verification walks the whole database (MaxMind's `verify`), which takes
/// a moment on production-size files; it runs at build and reload only,
/// never on the request path, and it is what keeps a corrupt file from
/// reaching lookups.
fn open_verified(kind: DbKind, path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    let bytes = std::fs::read(path).map_err(|source| GeoIpError::Read {
        kind: kind.as_str(),
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |e: MaxMindDbError| GeoIpError::Corrupt {
        kind: kind.as_str(),
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let reader = Reader::from_source(bytes).map_err(corrupt)?;
    reader.verify().map_err(corrupt)?;
    let found = &reader.metadata().database_type;
    if !kind.accepts(found) {
        return Err(GeoIpError::WrongType {
            expected: kind.as_str(),
            path: path.to_path_buf(),
            found: found.clone(),
        });
    }
    Ok(reader)
}

/// Which files to open; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoIpPaths {
    pub location: Option<PathBuf>,
    pub asn: Option<PathBuf>,
    pub anonymous_ip: Option<PathBuf>,
}

/// The GeoIP databases in service.
pub struct GeoIp {
    location: Option<Slot>,
    asn: Option<Slot>,
    anonymous_ip: Option<Slot>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("paths", &self.watched_paths())
            .finish()
    }
}

impl GeoIp {
    /// Open every configured file. Every failure is reported, not only the
    /// first, each tagged with its [`DbKind`].
    pub fn open(paths: &GeoIpPaths) -> Result<Self, Vec<(DbKind, GeoIpError)>> {
        let mut errors = Vec::new();
        let mut open = |kind, p: &Option<PathBuf>| match p {
            None => None,
            Some(p) => match Slot::open(kind, p.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push((kind, e));
                    None
                }
            },
        };
        let geo = GeoIp {
            location: open(DbKind::Location, &paths.location),
            asn: open(DbKind::Asn, &paths.asn),
            anonymous_ip: open(DbKind::AnonymousIp, &paths.anonymous_ip),
        };
        if errors.is_empty() {
            Ok(geo)
        } else {
            Err(errors)
        }
    }

    /// No database configured: every lookup is unknown.
    pub fn empty() -> Self {
        GeoIp {
            location: None,
            asn: None,
            anonymous_ip: None,
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        [&self.location, &self.asn, &self.anonymous_ip]
            .into_iter()
            .flatten()
    }

    /// The files in service, for the gateway's file watcher.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        self.slots().map(|s| s.path.clone()).collect()
    }

    pub fn has_anonymous_ip(&self) -> bool {
        self.anonymous_ip.is_some()
    }

    /// Reopen every file and swap each one that opens and verifies. A file
    /// that fails keeps its old reader in service; its error is returned.
    /// Blocking (reads and verifies whole files): call it from a blocking
    /// thread (`tokio::task::spawn_blocking`), not from a request task.
    pub fn reload(&self) -> Result<(), Vec<GeoIpError>> {
        let mut errors = Vec::new();
        for slot in self.slots() {
            match open_verified(slot.kind, &slot.path) {
                Ok(r) => slot.reader.store(Arc::new(r)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Everything the databases know about `ip`. Lookup errors (which a
    /// verified file should never produce) count as unknown and are logged
    /// without the address.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        GeoInfo {
            country: self.country(ip),
            asn: self.asn(ip),
            anonymous: self.anonymous(ip),
        }
    }

    /// ISO country code of `ip`: `country`, else `registered_country` (an
    /// anycast or satellite range may carry only the latter).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let slot = self.location.as_ref()?;
        let reader = slot.reader.load();
        let res = logged(slot, reader.lookup(ip))?;
        if !res.has_data() {
            return None;
        }
        for top in ["country", "registered_country"] {
            let path = [PathElement::Key(top), PathElement::Key("iso_code")];
            if let Some(code) = logged(slot, res.decode_path::<String>(&path)).flatten() {
                return Some(code);
            }
        }
        None
    }

    /// Autonomous system number of `ip`.
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        let slot = self.asn.as_ref()?;
        let reader = slot.reader.load();
        let res = logged(slot, reader.lookup(ip))?;
        let path = [PathElement::Key("autonomous_system_number")];
        logged(slot, res.decode_path::<u32>(&path)).flatten()
    }

    /// Anonymous-network flags of `ip` (all false when not listed or no
    /// Anonymous-IP db is configured).
    pub fn anonymous(&self, ip: IpAddr) -> AnonymousFlags {
        let Some(slot) = self.anonymous_ip.as_ref() else {
            return AnonymousFlags::default();
        };
        let reader = slot.reader.load();
        let rec = logged(slot, reader.lookup(ip))
            .and_then(|res| logged(slot, res.decode::<maxminddb::geoip2::AnonymousIp>()).flatten());
        let Some(a) = rec else {
            return AnonymousFlags::default();
        };
        let t = |b: Option<bool>| b.unwrap_or(false);
        AnonymousFlags {
            anonymous: t(a.is_anonymous),
            vpn: t(a.is_anonymous_vpn),
            tor: t(a.is_tor_exit_node),
            hosting: t(a.is_hosting_provider),
            public_proxy: t(a.is_public_proxy),
            residential_proxy: t(a.is_residential_proxy),
        }
    }
}

/// A lookup error is our problem (a verified db should not produce one),
/// not the caller's: log it and answer unknown.
fn logged<T>(slot: &Slot, r: Result<T, MaxMindDbError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(db = %slot.path.display(), error = %e, "GeoIP lookup failed; treating address as unknown");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn geo_dir() -> PathBuf {
        ztgate_testkit::testdata().join("geoip")
    }

    pub(crate) fn all_paths() -> GeoIpPaths {
        let d = geo_dir();
        GeoIpPaths {
            location: Some(d.join("GeoLite2-City-Test.mmdb")),
            asn: Some(d.join("GeoLite2-ASN-Test.mmdb")),
            anonymous_ip: Some(d.join("GeoIP2-Anonymous-IP-Test.mmdb")),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn known_addresses_from_the_readme() {
        let g = GeoIp::open(&all_paths()).unwrap();
        assert_eq!(g.country(ip("81.2.69.142")).as_deref(), Some("GB"));
        assert_eq!(g.country(ip("2.125.160.216")).as_deref(), Some("GB"));
        assert_eq!(g.country(ip("89.160.20.112")).as_deref(), Some("SE"));
        assert_eq!(g.asn(ip("1.128.0.1")), Some(1221));
        assert_eq!(g.asn(ip("12.81.92.1")), Some(7018));
        let a = g.anonymous(ip("81.2.69.142"));
        assert!(a.anonymous && a.vpn && a.tor && a.hosting && a.public_proxy);
        let b = g.anonymous(ip("1.2.0.1"));
        assert!(b.anonymous && b.vpn && !b.tor && !b.hosting);
        assert_eq!(g.anonymous(ip("89.160.20.112")), AnonymousFlags::default());
    }

    #[test]
    fn country_db_and_country_only_entries() {
        let d = geo_dir();
        let g = GeoIp::open(&GeoIpPaths {
            location: Some(d.join("GeoLite2-Country-Test.mmdb")),
            ..GeoIpPaths::default()
        })
        .unwrap();
        assert_eq!(g.country(ip("67.43.156.1")).as_deref(), Some("BT"));
        assert_eq!(g.country(ip("89.160.20.112")).as_deref(), Some("SE"));
        assert_eq!(g.asn(ip("1.128.0.1")), None, "no ASN db configured");
    }

    #[test]
    fn addresses_not_in_the_db_are_unknown() {
        let g = GeoIp::open(&all_paths()).unwrap();
        for a in ["127.0.0.1", "10.0.0.1", "::1", "192.168.1.1"] {
            assert_eq!(g.lookup(ip(a)), GeoInfo::default(), "{a}");
        }
        assert_eq!(GeoIp::empty().lookup(ip("81.2.69.142")), GeoInfo::default());
    }

    #[test]
    fn corrupt_files_are_refused_naming_the_file() {
        let d = geo_dir();
        for name in [
            "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
            "MaxMind-DB-test-broken-pointers-24.mmdb",
        ] {
            let err = GeoIp::open(&GeoIpPaths {
                location: Some(d.join(name)),
                ..GeoIpPaths::default()
            })
            .unwrap_err();
            assert_eq!(err.len(), 1);
            let msg = err[0].1.to_string();
            assert!(
                matches!(err[0].1, GeoIpError::Corrupt { .. }),
                "{name}: {msg}"
            );
            assert!(msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn every_failure_is_reported_and_wrong_type_refused() {
        let d = geo_dir();
        let err = GeoIp::open(&GeoIpPaths {
            location: Some(d.join("GeoLite2-ASN-Test.mmdb")),
            asn: Some(d.join("missing.mmdb")),
            anonymous_ip: Some(d.join("GeoIP2-City-Test-Invalid-Node-Count.mmdb")),
        })
        .unwrap_err();
        assert_eq!(err.len(), 3);
        assert!(matches!(err[0].1, GeoIpError::WrongType { .. }));
        assert!(matches!(err[1].1, GeoIpError::Read { .. }));
        assert!(err[1].1.to_string().contains("missing.mmdb"));
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_old_on_corrupt() {
        let tmp = std::env::temp_dir().join(format!("ztgate-device-geo-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let live = tmp.join("country.mmdb");
        let d = geo_dir();
        std::fs::copy(d.join("GeoLite2-City-Test.mmdb"), &live).unwrap();
        let g = GeoIp::open(&GeoIpPaths {
            location: Some(live.clone()),
            ..GeoIpPaths::default()
        })
        .unwrap();
        assert_eq!(g.watched_paths(), vec![live.clone()]);
        // 217.65.48.1 (GI) is only in the Country test db: seeing it proves
        // the swap happened.
        assert_eq!(g.country(ip("217.65.48.1")), None);
        std::fs::copy(d.join("GeoLite2-Country-Test.mmdb"), &live).unwrap();
        g.reload().unwrap();
        assert_eq!(g.country(ip("217.65.48.1")).as_deref(), Some("GI"));
        // Corrupt replacement: refused, old db stays in service.
        std::fs::copy(d.join("GeoIP2-City-Test-Invalid-Node-Count.mmdb"), &live).unwrap();
        let errs = g.reload().unwrap_err();
        assert!(errs[0].to_string().contains("country.mmdb"));
        assert_eq!(g.country(ip("217.65.48.1")).as_deref(), Some("GI"));
        // Removed file: same.
        std::fs::remove_file(&live).unwrap();
        assert!(g.reload().is_err());
        assert_eq!(g.country(ip("217.65.48.1")).as_deref(), Some("GI"));
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
