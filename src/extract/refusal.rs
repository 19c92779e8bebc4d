//! Why a request is refused before any token is looked at: typed, so the
//! deny table, metrics and tests match on variants, with the client-safe
//! sentence in one place (`Display`) and a stable `label()`.

use std::fmt;

macro_rules! refusals {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal, $text:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// Stable label for logs and tests.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            /// Safe to show the client: never contains the request's values.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }
    };
}

refusals! {
    /// The credential is not one well-formed bearer token (400 `invalid_request`).
    CredentialProblem {
        EmptyHeader => "empty_header", "empty Authorization header";
        NotBearerForm => "not_bearer_form", "Authorization header must be 'Bearer <token>'";
        SchemeNotBearer => "scheme_not_bearer", "Authorization scheme must be Bearer";
        EmptyToken => "empty_token", "empty bearer token";
        TooLong => "too_long", "bearer token too long";
        NotB64Token => "not_b64token", "bearer token has characters outside RFC 6750 b64token";
        HeaderAndQuery => "header_and_query", "a token was sent both in the Authorization header and the query";
        RepeatedHeader => "repeated_header", "more than one Authorization header";
        NotText => "not_text", "a header that may carry the credential is not valid text";
        TwoCredentials => "two_credentials", "two different credentials in one request";
        EncodedQueryName => "encoded_query_name", "the token's query parameter name is spelt another way an upstream reads as it (percent-encoded, another case, or as PHP reads it: `access.token`)";
        SemicolonQuery => "semicolon_query", "the token's query parameter follows a ';' (some servers split the query there)";
        UnexpectedAuthorization => "unexpected_authorization", "this route does not take its token from the Authorization header";
        UnreadQueryToken => "unread_query_token", "the query holds a token (access_token), which this route does not read";
    }
}

refusals! {
    /// A path we refuse to match (400 `invalid_path`; see `extract::path`).
    PathProblem {
        TooLong => "too_long", "path too long";
        NotAbsolute => "not_absolute", "path must start with '/'";
        DotSegments => "dot_segments", "dot segments ('.', '..') are not allowed in the path";
        ControlCharacters => "control_characters", "control characters are not allowed in the path";
        EncodedSlash => "encoded_slash", "encoded slashes and backslashes are not allowed in the path";
        Parameters => "parameters", "path parameters (';') are not allowed";
        BadPercentEncoding => "bad_percent_encoding", "malformed percent-encoding in the path";
        AmbiguousTrailingSlash => "ambiguous_trailing_slash", "the path with and without its trailing '/' falls under different rules; send the form the API documents";
        AmbiguousLetterCase => "ambiguous_letter_case", "the path and its lower-case spelling fall under different rules; send the form the API documents";
    }
}

refusals! {
    /// A method, host or forwarded description that is not one (400 `bad_request`).
    RequestProblem {
        MethodNotToken => "method_not_token", "the method is not an HTTP method token";
        MethodNotUpperCase => "method_not_upper_case", "the method is not in upper case (methods are case-sensitive)";
        HostInvalid => "host_invalid", "the host is not a valid host name";
        ForwardedUntrusted => "forwarded_untrusted", "forwarded request facts are accepted only from forward_auth.trusted_proxies";
        ForwardedConflict => "forwarded_conflict", "the forwarded headers disagree or are repeated";
        ForwardedMissing => "forwarded_missing", "the original method and URI are missing (X-Forwarded-Method/-Uri or X-Original-Method/-URI)";
        ForwardedNotText => "forwarded_not_text", "a forwarded header is not valid text";
        NotText => "not_text", "the method, host or path is not valid text";
        FragmentInTarget => "fragment_in_target", "a request target has no fragment ('#')";
        AuthorityLikeTarget => "authority_like_target", "the path must not start with '//'";
        MethodOverride => "method_override", "a method override (X-HTTP-Method-Override, _method) naming another method is not accepted: send the real method";
        HeaderSpelling => "header_spelling", "a header the authorizer sets or reads a token from, or a forwarded header, spelled with a separator other than '-' or '_' (X.Client.Id, X+Forwarded+Host) is not accepted";
    }
}

refusals! {
    /// Headers beyond our limits (431 `request_too_large`).
    SizeProblem {
        TooManyHeaders => "too_many_headers", "too many request headers";
        HeadersTooLarge => "headers_too_large", "request headers too large";
    }
}
