"""What every app shares and nothing owns: the application error base, the one API exception
handler and error serializer, the AWS client factory. `core` imports no app."""
