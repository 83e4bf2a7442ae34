//! Writes a throwaway CA and one certificate for local use into a directory:
//! `distcron-dev-certs <dir> [name...]` makes `<dir>/ca.pem` and `<dir>/node.pem` with
//! `<dir>/node-key.pem`, valid for `localhost`, `127.0.0.1` and any further names, for servers
//! and clients alike. Used by `scripts/cluster.sh up --tls`; not for production.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: distcron-dev-certs <dir> [extra host names...]");
        return std::process::ExitCode::from(2);
    };
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(args);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let made = distcron_testkit::TestCa::new(std::path::Path::new(&dir), "distcron dev CA")
        .and_then(|ca| ca.issue("node", &names));
    match made {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distcron-dev-certs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
