//! The admin password policy: at least 12 characters, not only whitespace, and not one of the
//! passwords that top every leaked-password list (compared case-insensitively, ignoring
//! surrounding whitespace). Kept small on purpose: length does most of the work.

use super::AuthError;

pub const MIN_PASSWORD_CHARS: usize = 12;

/// The commonest passwords of 12 characters or more (shorter ones fail the length rule anyway),
/// lower-cased.
const COMMON_PASSWORDS: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789123",
    "1234567891011",
    "111111111111",
    "000000000000",
    "123123123123",
    "qwertyuiop12",
    "qwertyuiopasdfghjkl",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "1qaz2wsx3edc4rfv",
    "zaq12wsxcde3",
    "asdfghjkl123",
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "password1234!",
    "password123!",
    "passw0rd1234",
    "p@ssw0rd1234",
    "p@ssword1234",
    "administrator",
    "administrator1",
    "admin1234567",
    "adminadmin123",
    "adminpassword",
    "changeme1234",
    "changemenow!",
    "letmein12345",
    "iloveyou1234",
    "welcome12345",
    "welcome123456",
    "abcdefghijkl",
    "abcd12345678",
    "abc123456789",
    "aaaaaaaaaaaa",
    "qwertyqwerty",
    "football1234",
    "baseball1234",
    "superman1234",
    "sunshine1234",
    "princess1234",
    "trustno1trustno1",
    "correcthorsebatterystaple",
];

/// Checks a new password against the policy; the error names the field.
pub fn check_new_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::Invalid(format!(
            "password: must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.trim().is_empty() {
        return Err(AuthError::Invalid("password: must not be only whitespace".into()));
    }
    let normalized = password.trim().to_lowercase();
    if COMMON_PASSWORDS.contains(&normalized.as_str()) {
        return Err(AuthError::Invalid(
            "password: is one of the most common passwords; choose another".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_common_passwords_are_refused() {
        assert!(check_new_password("            ").is_err());
        assert!(check_new_password("\t\t\t\t\t\t\t\t\t\t\t\t").is_err());
        assert!(check_new_password("Password1234").is_err());
        assert!(check_new_password(" 123456789012 ").is_err());
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("a fine long passphrase").is_ok());
    }

    #[test]
    fn the_list_holds_only_lower_case_entries_the_length_rule_lets_through() {
        for p in COMMON_PASSWORDS {
            assert_eq!(*p, p.to_lowercase());
            assert!(p.chars().count() >= MIN_PASSWORD_CHARS, "{p}");
        }
    }
}
