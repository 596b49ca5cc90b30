//! A small blocking HTTP/1.1 client over a `TcpStream`, all the
//! command-line client needs: one request per connection
//! (`Connection: close`), a body read by `Content-Length`, chunks or to the
//! end, and streamed for `watch`. Written here rather than taken from an
//! HTTP client crate: the one the tests use (awc) would switch on HTTP/2 in
//! the node's own server as well, since Cargo unifies a crate's features
//! across the binary, and the node serves plain HTTP/1.1.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Header lines read at most, and bytes per line.
const MAX_HEADERS: usize = 100;
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Where a node listens: `http://HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `HOST:PORT`, as the `Host` header and the socket address.
    authority: String,
}

impl Origin {
    pub fn parse(url: &str) -> Result<Origin, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL (a node serves plain HTTP)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "{url:?}: give the node's address only, as http://HOST:PORT"
            ));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Origin { authority })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority)
    }
}

/// The status and headers of an answer, and its body to read.
pub struct Response {
    pub status: u16,
    pub body: Body,
}

/// How the body's end is known.
enum Framing {
    Length(usize),
    /// Bytes left in the current chunk; `None` before a chunk's size line.
    Chunked(Option<usize>),
    UntilClose,
    Done,
}

/// A response body, decoded from its framing as it is read.
pub struct Body {
    stream: BufReader<TcpStream>,
    framing: Framing,
}

/// Sends one request and reads the answer's head; `read_timeout` bounds
/// every read of the answer (a silent node is an error, not a hang).
pub fn send(
    origin: &Origin,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    read_timeout: Duration,
) -> io::Result<Response> {
    let address = origin
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))?;
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_nodelay(true)?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: pushgrid-cli\r\n",
        origin.authority
    );
    for (name, value) in headers {
        if value.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a line break in {name}"),
            ));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut writer = &stream;
    writer.write_all(head.as_bytes())?;
    if let Some(body) = body {
        writer.write_all(body)?;
    }
    writer.flush()?;
    read_head(BufReader::new(stream))
}

fn read_head(mut stream: BufReader<TcpStream>) -> io::Result<Response> {
    let status_line = read_line(&mut stream)?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP answer: {status_line:?}")))?;
    let mut framing = Framing::UntilClose;
    for _ in 0..MAX_HEADERS {
        let line = read_line(&mut stream)?;
        if line.is_empty() {
            return Ok(Response {
                status,
                body: Body { stream, framing },
            });
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("a bad header line: {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| invalid(format!("Content-Length {value:?}")))?;
            framing = Framing::Length(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked(None);
        }
    }
    Err(invalid("too many header lines".into()))
}

/// One line without its CRLF.
fn read_line(stream: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    stream
        .by_ref()
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(if line.is_empty() {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the node closed the connection")
        } else {
            invalid("a line too long or cut off".into())
        });
    }
    line.truncate(line.len() - if line.ends_with(b"\r\n") { 2 } else { 1 });
    String::from_utf8(line).map_err(|_| invalid("a line that is not UTF-8".into()))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Body {
    /// The whole body, as text (lossy).
    pub fn text(mut self) -> io::Result<String> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Body {
    /// Reads at most `left` bytes of what the framing says is still due;
    /// the connection ending first is `cut_off`.
    fn read_some(&mut self, buf: &mut [u8], left: usize, cut_off: &str) -> io::Result<usize> {
        let take = buf.len().min(left);
        match self.stream.read(&mut buf[..take])? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, cut_off.to_string())),
            n => Ok(n),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::UntilClose => return self.stream.read(buf),
                Framing::Length(0) => self.framing = Framing::Done,
                Framing::Length(left) => {
                    let n = self.read_some(buf, left, "the body was cut off")?;
                    self.framing = Framing::Length(left - n);
                    return Ok(n);
                }
                Framing::Chunked(None) => {
                    let line = read_line(&mut self.stream)?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| invalid(format!("a chunk size {line:?}")))?;
                    if size == 0 {
                        // The last chunk; trailers (none expected) end with a blank line.
                        while !read_line(&mut self.stream)?.is_empty() {}
                        self.framing = Framing::Done;
                    } else {
                        self.framing = Framing::Chunked(Some(size));
                    }
                }
                Framing::Chunked(Some(0)) => {
                    if !read_line(&mut self.stream)?.is_empty() {
                        return Err(invalid("a chunk not ended by CRLF".into()));
                    }
                    self.framing = Framing::Chunked(None);
                }
                Framing::Chunked(Some(left)) => {
                    let n = self.read_some(buf, left, "a chunk was cut off")?;
                    self.framing = Framing::Chunked(Some(left - n));
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection with `answer`, returning what the client sent.
    fn serve_once(answer: &'static [u8]) -> (Origin, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = Origin::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = vec![0; 4096];
            let n = socket.read(&mut request).unwrap();
            socket.write_all(answer).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (origin, server)
    }

    #[test]
    fn bodies_are_read_by_length_by_chunks_and_to_the_end() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"[..],
                "hello",
            ),
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n"
                    [..],
                "hello",
            ),
            (&b"HTTP/1.1 404 Not Found\r\n\r\nto the end"[..], "to the end"),
        ] {
            let (origin, server) = serve_once(answer);
            let response = send(
                &origin,
                "GET",
                "/x?y=1",
                &[("Authorization", "Bearer t")],
                None,
                CONNECT_TIMEOUT,
            )
            .unwrap();
            assert!(response.status == 200 || response.status == 404);
            assert_eq!(response.body.text().unwrap(), expected);
            let request = server.join().unwrap();
            assert!(request.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("\r\nAuthorization: Bearer t\r\n"), "{request}");
        }
    }

    #[test]
    fn origins_are_plain_http_addresses() {
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080/").unwrap().url("/a"),
            "http://127.0.0.1:8080/a"
        );
        assert_eq!(
            Origin::parse("http://localhost").unwrap().url("/"),
            "http://localhost:80/"
        );
        assert!(Origin::parse("https://example.com").is_err());
        assert!(Origin::parse("http://example.com/api").is_err());
        assert!(Origin::parse("127.0.0.1:8080").is_err());
    }
}
